import { LOCAL_BLOB_PATH } from "../adapters/blob/local-blob-store.js";
import { type WebHandler, pathOf } from "./http.js";

/**
 * Lets a web page on another origin use the local blob store's signed URLs: the signature is the whole authority (no
 * cookies), so any origin may PUT or GET with one. Needed whenever the page's origin differs from the URLs' (the page
 * opened as http://localhost:8080 while PUBLIC_URL is unset and URLs name 127.0.0.1, or the Vite dev server). Put it
 * before the blob store's handler: it answers preflights itself and adds its header to the store's answers.
 */
export const blobCors: WebHandler = async (req, res) => {
  if (!pathOf(req)?.startsWith(LOCAL_BLOB_PATH)) return false;
  res.setHeader("access-control-allow-origin", "*");
  if (req.method !== "OPTIONS") return false;
  res.writeHead(204, {
    "access-control-allow-methods": "GET, PUT",
    "access-control-allow-headers": "content-type",
    "access-control-max-age": "600",
  });
  res.end();
  return true;
};
