import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

/** Where `npm run dev:web` sends API, media and sign-in requests: a Palaver server started with `npm start`. */
const server = process.env.PALAVER_URL ?? "http://127.0.0.1:8080";

export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  // Served at the server's root; the build lands in web/dist, where the server looks for it.
  base: "/",
  build: { outDir: "dist", emptyOutDir: true, sourcemap: true },
  server: {
    proxy: { "^/(palaver\\.chat\\.v1\\.|blobs/|dev/)": server },
  },
});
