// DPoP (RFC 9449): proofs of possession of a client's key, checked at the token endpoint (§5) and
// by the admin API as a resource server (§7), and the server nonces of §8.
import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto'
import { calculateJwkThumbprint } from 'jose'
import { LRUCache } from 'lru-cache'
import { epochSeconds, type Clock } from '../clock.js'
import type { DpopNonceMode } from '../config.js'
import type { Client } from '../clients/repository.js'
import { OAuthError, invalidDpopProof } from '../errors.js'
import { LIMITS } from '../input.js'
import type { ReplayGuard } from '../replay/guard.js'
import { CLIENT_ALGS, KeyProblem, decodeJws, isClientAlg, isNumericDate, jwsVerifier, publicKeyFor, type VerifyJws } from './jws.js'

export const DPOP_ALGS = CLIENT_ALGS

// RFC 9449 §8: a nonce is good for the current step and the one before, so a client that got one
// at the end of a step has at least a step to use it.
const NONCE_STEP_SECONDS = 60
// Keys seen in proofs, with their verifier and thumbprint: a client signs every proof with one key,
// and making a verifier is most of what checking a proof costs. Bounded: keys are the clients' choice.
const KEY_CACHE_SIZE = 10_000
// A jti is the client's random identifier; nothing needs more than this.
const MAX_JTI_BYTES = 256

export interface DpopSettings {
  nonceMode: DpopNonceMode
  /** How far iat may be from now, either way, in seconds. */
  window: number
  /** The nonce key is derived from it: every instance shares it, so every instance accepts a nonce. */
  keyEncryptionKey: Buffer
  /** During a KEY_ENCRYPTION_KEY rotation, the nonces an instance still on the old key handed out stay good. */
  previousKeyEncryptionKey?: Buffer | undefined
}

/** A proof that passed every check: the RFC 7638 thumbprint of its key. */
export interface DpopProof {
  jkt: string
}

export interface ProofRequest {
  /** Every DPoP header of the request, as received (Node would join repeated ones). */
  headers: readonly string[]
  method: string
  /** The URL the proof must name (htu), as this server knows itself. */
  url: string
  /** Whether the proof must carry a nonce of ours (RFC 9449 §8). */
  nonceRequired: boolean
  /** At a resource server: the access token the proof must be bound to (ath, §4.3 check 12). */
  accessToken?: string | undefined
}

/** RFC 9449 §4.3 and §11.1: every check of a proof, and its jti recorded against replay. */
export class Dpop {
  private readonly keys = new LRUCache<string, { verify: VerifyJws; jkt: string }>({ max: KEY_CACHE_SIZE })
  private readonly nonceKey: Buffer
  private readonly previousNonceKey: Buffer | undefined
  private readonly nonces = new Map<number, string>()

  constructor(
    private readonly clock: Clock,
    private readonly replay: ReplayGuard,
    private readonly settings: DpopSettings,
  ) {
    this.nonceKey = nonceKeyOf(settings.keyEncryptionKey)
    this.previousNonceKey = settings.previousKeyEncryptionKey === undefined ? undefined : nonceKeyOf(settings.previousKeyEncryptionKey)
  }

  /** Whether a token request of this client must carry a nonce (DPOP_NONCE). */
  requiresNonce(client: Pick<Client, 'tokenEndpointAuthMethod'>): boolean {
    const mode = this.settings.nonceMode
    return mode === 'always' || (mode === 'public' && client.tokenEndpointAuthMethod === 'none')
  }

  /** Whether this server hands out nonces at all. */
  get usesNonces(): boolean {
    return this.settings.nonceMode !== 'never'
  }

  /**
   * The nonce of the current step: an HMAC of the step number under a key every instance derives
   * from KEY_ENCRYPTION_KEY, so any instance checks what any other handed out, with nothing stored.
   */
  nonce(): string {
    return this.nonceOf(this.step())
  }

  /**
   * The request's proof, verified, or undefined when it has none. Anything wrong with it is
   * invalid_dpop_proof; a nonce that is required but missing, or not a current one, is
   * use_dpop_nonce with a fresh nonce in DPoP-Nonce.
   */
  async verify(req: ProofRequest): Promise<DpopProof | undefined> {
    if (req.headers.length === 0) return undefined
    // §4.3 check 1
    if (req.headers.length > 1) throw invalidDpopProof('send exactly one DPoP header')
    const proof = req.headers[0]!
    if (proof.length > LIMITS.token) throw invalidDpopProof(`the DPoP proof is too long (at most ${LIMITS.token} bytes)`)
    // §4.3 checks 2 to 7
    const decoded = decodeJws(proof)
    if (decoded === undefined) throw invalidDpopProof('the DPoP proof is not a signed JWT')
    const { header } = decoded
    if (header['typ'] !== 'dpop+jwt') throw invalidDpopProof('the DPoP proof must have typ "dpop+jwt"')
    const alg = header['alg']
    if (!isClientAlg(alg)) throw invalidDpopProof(`the DPoP proof must be signed with one of ${DPOP_ALGS.join(', ')}`)
    const key = await this.key(header['jwk'], alg, proof)
    const { payload } = key
    // §4.3 checks 3, 8, 9, 11
    const { jti, htm, htu, iat } = payload
    if (typeof jti !== 'string' || jti === '' || Buffer.byteLength(jti) > MAX_JTI_BYTES) {
      throw invalidDpopProof('the DPoP proof must have a jti')
    }
    if (htm !== req.method) throw invalidDpopProof(`the DPoP proof's htm must be ${req.method}`)
    if (typeof htu !== 'string' || !sameTarget(htu, req.url)) throw invalidDpopProof(`the DPoP proof's htu must be ${req.url}`)
    if (!isNumericDate(iat)) throw invalidDpopProof('the DPoP proof must have an iat')
    const now = epochSeconds(this.clock.now())
    if (Math.abs(now - iat) > this.settings.window) throw invalidDpopProof('the DPoP proof was not made just now (iat)')
    // §4.3 check 10: a nonce is checked whenever one is sent, and required when the client must.
    const nonce = payload['nonce']
    if (this.usesNonces && (req.nonceRequired || nonce !== undefined) && !this.isCurrentNonce(nonce)) {
      throw new OAuthError(
        'use_dpop_nonce',
        nonce === undefined ? 'the DPoP proof must carry the nonce in DPoP-Nonce' : 'the DPoP nonce is stale: use the one in DPoP-Nonce',
        undefined,
        undefined,
        { headers: { 'dpop-nonce': this.nonce() } },
      )
    }
    // §4.3 check 12 (resource servers): ath is the hash of the access token sent with it.
    if (req.accessToken !== undefined && payload['ath'] !== tokenHash(req.accessToken)) {
      throw invalidDpopProof('the DPoP proof is not for this access token (ath)')
    }
    // §11.1: a proof is accepted once, on any instance, while its iat is in the window.
    if (!(await this.replay.firstUse('dpop', `${key.jkt} ${jti}`, proofAcceptedUntil(iat, this.settings.window)))) {
      throw invalidDpopProof('the DPoP proof was used before')
    }
    return { jkt: key.jkt }
  }

  /**
   * The key of a proof's jwk header, with its thumbprint, and the proof's payload verified by it.
   * A key is kept (its verifier and thumbprint, made once per key) only once a proof made with it
   * verified: a stream of distinct keys with bad signatures costs a check each and evicts nothing.
   */
  private async key(jwk: unknown, alg: (typeof DPOP_ALGS)[number], proof: string): Promise<{ jkt: string; payload: Record<string, unknown> }> {
    if (typeof jwk !== 'object' || jwk === null) throw invalidDpopProof('the DPoP proof must carry its public key (jwk)')
    const id = `${alg} ${JSON.stringify(jwk)}`
    const cached = this.keys.get(id)
    let verify: VerifyJws
    if (cached !== undefined) {
      verify = cached.verify
    } else {
      try {
        verify = jwsVerifier(publicKeyFor(jwk, alg), alg)
      } catch (err) {
        throw invalidDpopProof(
          err instanceof KeyProblem ? `the DPoP proof's jwk: ${err.message}` : "the DPoP proof's jwk is not a valid public key",
        )
      }
    }
    let payload: Record<string, unknown>
    try {
      payload = verify(proof).payload
    } catch (err) {
      throw invalidDpopProof('the DPoP proof signature does not verify with its jwk', (err as Error).message)
    }
    if (cached !== undefined) return { jkt: cached.jkt, payload }
    // jose computes the RFC 7638 thumbprint (on WebCrypto, so once per key, not per proof).
    const jkt = await calculateJwkThumbprint(jwk as never, 'sha256')
    this.keys.set(id, { verify, jkt })
    return { jkt, payload }
  }

  private step(): number {
    return Math.floor(epochSeconds(this.clock.now()) / NONCE_STEP_SECONDS)
  }

  private nonceOf(step: number): string {
    // Every answer to a proof carries the current one: made once per step.
    const cached = this.nonces.get(step)
    if (cached !== undefined) return cached
    const nonce = nonceUnder(this.nonceKey, step)
    if (this.nonces.size > 4) this.nonces.clear()
    this.nonces.set(step, nonce)
    return nonce
  }

  private isCurrentNonce(nonce: unknown): boolean {
    if (typeof nonce !== 'string') return false
    const presented = Buffer.from(nonce)
    const step = this.step()
    const matches = (expected: Buffer) => presented.length === expected.length && timingSafeEqual(presented, expected)
    return [step, step - 1].some(
      (s) =>
        matches(Buffer.from(this.nonceOf(s))) ||
        (this.previousNonceKey !== undefined && matches(Buffer.from(nonceUnder(this.previousNonceKey, s)))),
    )
  }
}

/**
 * The first instant at which a proof with this iat is refused as too old. The check above compares
 * whole seconds (now rounded down) with an iat that may be fractional, so a proof stays good until
 * the second holding iat + window has ended, not until iat + window itself: its jti must be kept
 * that long, or every replay in that last second looks new.
 */
export const proofAcceptedUntil = (iat: number, window: number): Date => new Date((Math.floor(iat + window) + 1) * 1000)

const nonceKeyOf = (keyEncryptionKey: Buffer): Buffer =>
  Buffer.from(hkdfSync('sha256', keyEncryptionKey, Buffer.alloc(0), 'tessera dpop nonce', 32))

const nonceUnder = (nonceKey: Buffer, step: number): string => createHmac('sha256', nonceKey).update(`dpop-nonce ${step}`).digest('base64url')

/** RFC 9449 §4.2: ath, the base64url SHA-256 of the access token's ASCII. */
export const tokenHash = (token: string): string => createHash('sha256').update(token, 'ascii').digest('base64url')

/**
 * RFC 9449 §4.3 check 9: htu names this request's URL, its query and fragment left out. Both are
 * normalised as URLs (scheme and host case, default port), and nothing else: "/token/" is not
 * "/token".
 */
function sameTarget(htu: string, expected: string): boolean {
  let url: URL
  try {
    url = new URL(htu)
  } catch {
    return false
  }
  url.search = ''
  url.hash = ''
  return url.href === new URL(expected).href
}
