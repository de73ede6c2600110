/** A server's /metrics page, as Prometheus scrapes it. */
export async function scrapeMetrics(serverUrl: string): Promise<string> {
  const response = await fetch(`${serverUrl}/metrics`);
  if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
  return response.text();
}

/** The value of the first sample of `name` that carries all of `labels` (more are allowed); 0 when there is none. */
export function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  const wanted = Object.entries(labels).map(([key, value]) => `${key}="${value}"`);
  for (const line of text.split("\n")) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (match?.[1] !== name) continue;
    const have = match[2]?.split(",") ?? [];
    if (wanted.every((w) => have.includes(w))) return Number(match[3]);
  }
  return 0;
}
