/** Who is calling: the user and device named by the bearer token, and the key the database gave that device. */
export interface Caller {
  userId: string;
  deviceName: string;
  deviceKey: string;
  /** When the bearer token expires: a stream opened with it ends then, with UNAUTHENTICATED. */
  tokenExpiresAt: Date;
}
