import argon2 from 'argon2'

/**
 * argon2id with OWASP's recommended floor (m = 19 MiB, t = 2, p = 1): memory-hard enough that a
 * GPU farm gains little, and about 20-30 ms on one core here, so a login stays fast and a burst
 * of logins does not exhaust memory (19 MiB per hash in flight, at most libuv's 4 threads). The
 * parameters are stored in every hash, so raising them later only affects new hashes.
 */
export const ARGON2_OPTIONS = {
  type: argon2.argon2id,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
} as const

export const hashPassword = (password: string): Promise<string> => argon2.hash(password, ARGON2_OPTIONS)

let dummyHash: Promise<string> | undefined

/**
 * Checks a password. With no stored hash (unknown user) it verifies against a dummy hash with the
 * same parameters, so that a wrong username and a wrong password take about the same time.
 */
export async function verifyPassword(storedHash: string | undefined, password: string): Promise<boolean> {
  if (storedHash === undefined) {
    dummyHash ??= hashPassword('tessera: no such user')
    await argon2.verify(await dummyHash, password).catch(() => false)
    return false
  }
  try {
    return await argon2.verify(storedHash, password)
  } catch {
    return false
  }
}

/** Warms the dummy hash at start so the first unknown-user login is not faster than the rest. */
export function prepareDummyHash(): Promise<unknown> {
  dummyHash ??= hashPassword('tessera: no such user')
  return dummyHash
}
