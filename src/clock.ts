/** Time is injected so that expiry and key rotation can be tested without sleeping. */
export interface Clock {
  now(): Date
}

export const systemClock: Clock = { now: () => new Date() }

/** Whole seconds since the epoch, as JWT NumericDate values are (RFC 7519 §2). */
export const epochSeconds = (d: Date): number => Math.floor(d.getTime() / 1000)

export const addSeconds = (d: Date, seconds: number): Date => new Date(d.getTime() + seconds * 1000)
