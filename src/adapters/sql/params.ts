/**
 * Binds parameters the same way on both drivers. Arrays are sent as Postgres array literals (the SQL casts them:
 * `$1::bigint[]`) because postgres.js would otherwise declare an array of bigint, Date or bytes as a scalar of that
 * type. Scalars pass through: each driver serializes them for the type Postgres infers.
 */
export function encodeParams(params: readonly unknown[]): unknown[] {
  return params.map((value) => (Array.isArray(value) ? arrayLiteral(value) : (value ?? null)));
}

function arrayLiteral(values: readonly unknown[]): string {
  return `{${values.map(arrayElement).join(",")}}`;
}

function arrayElement(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  // Numbers need no quotes (and batches of ids are the largest arrays): no escaping pass for them.
  if (typeof value === "bigint" || typeof value === "number") return String(value);
  const text =
    value instanceof Date ? value.toISOString() : value instanceof Uint8Array ? byteaText(value) : String(value);
  return `"${text.replace(/[\\"]/g, "\\$&")}"`;
}

/** The hex input format of bytea. */
export function byteaText(bytes: Uint8Array): string {
  return `\\x${Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex")}`;
}

/** Parses bytea's hex output format into a Uint8Array (a plain one, not a Buffer, as the ports promise). */
export function byteaFromText(text: string): Uint8Array {
  const buffer = Buffer.from(text.slice(2), "hex");
  return new Uint8Array(buffer.buffer, buffer.byteOffset, buffer.byteLength);
}
