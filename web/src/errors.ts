import { Code, ConnectError } from "@connectrpc/connect";

/** "Permission denied: only participants may send to a chat": the server's own words, after a readable code. */
export function describeError(error: unknown): string {
  if (!(error instanceof ConnectError) && error instanceof Error) return error.message;
  const connectError = ConnectError.from(error);
  // fetch() failures reach us as UNKNOWN "Failed to fetch" (or the like): say what it means.
  if (connectError.code === Code.Unknown && isNetworkFailure(connectError)) {
    return "Network error: the server could not be reached";
  }
  return `${codeLabel(connectError.code)}: ${connectError.rawMessage}`;
}

/** Worth another try with the same client_message_id: the request may not have arrived, or the server was busy. */
export function isRetryable(error: unknown): boolean {
  const { code } = ConnectError.from(error);
  return code === Code.Unavailable || code === Code.Unknown || code === Code.DeadlineExceeded || code === Code.Aborted;
}

export function errorCode(error: unknown): Code {
  return ConnectError.from(error).code;
}

function isNetworkFailure(error: ConnectError): boolean {
  return error.cause instanceof TypeError || /fetch|network/i.test(error.rawMessage);
}

/** Code.PermissionDenied → "Permission denied". */
function codeLabel(code: Code): string {
  const words = (Code[code] ?? "Error").replace(/([a-z])([A-Z])/g, "$1 $2").toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}
