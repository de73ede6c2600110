/** Where the server reads the time, so tests can move it (retention) without waiting. */
export interface Clock {
  now(): Date;
}

export const systemClock: Clock = { now: () => new Date() };

/** One day in milliseconds: partitions, retention and media lifetimes count in whole days. */
export const DAY_MS = 24 * 60 * 60 * 1000;
