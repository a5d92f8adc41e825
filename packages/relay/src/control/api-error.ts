/** Every control API error: an HTTP status, a stable code, a message for people. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    /** Seconds for a Retry-After header (429/503 answers). */
    readonly retryAfterS?: number,
  ) {
    super(message);
  }

  toJSON(): { error: { code: string; message: string } } {
    return { error: { code: this.code, message: this.message } };
  }
}

/** A URL path segment, %-decoded; a malformed escape is the client's error (400), not ours. */
export function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new ApiError(400, 'bad_path', `malformed %-escape in path segment ${JSON.stringify(s.slice(0, 64))}`);
  }
}
