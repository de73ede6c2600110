/**
 * `attachment` so browsers save rather than render (uploads are untrusted and the local store serves them from the
 * API's own origin). An ASCII `filename` for old clients plus the exact name as RFC 8187 `filename*`, which keeps the
 * header ASCII whatever the name holds.
 */
export function attachmentDisposition(fileName: string): string {
  const fallback = fileName.replace(/[^\x20-\x7e]|["\\%]/g, "_");
  const encoded = encodeURIComponent(fileName).replace(
    /['()*]/g, // left alone by encodeURIComponent, not allowed in an RFC 8187 value
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );
  return `attachment; filename="${fallback}"; filename*=UTF-8''${encoded}`;
}
