// private_key_jwt (RFC 7523 §2.2 and §3, RFC 7521 §4.2), with the audience rule of its update
// (draft-ietf-oauth-rfc7523bis): the assertion's aud is the issuer identifier and nothing else. An
// aud that may be an array, or the token endpoint's URL, is what let an assertion a client made for
// one server be replayed at another in the 2025 audience-injection attacks.
import { LRUCache } from 'lru-cache'
import { epochSeconds, type Clock } from '../clock.js'
import { JwksFetchError, type RemoteJwks } from '../clients/jwks-uri.js'
import type { Client } from '../clients/repository.js'
import type { ReplayGuard } from '../replay/guard.js'
import { KeyProblem, decodeJws, isNumericDate, jwsVerifier, publicKeyFor, type ClientAlg, type VerifyJws } from './jws.js'

export const JWT_BEARER = 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer'

// An assertion is made for one request: it may not be valid for longer than this (exp - now).
export const MAX_ASSERTION_LIFETIME = 300
// Clocks differ: exp, nbf and iat are judged with this much leeway, and a jti is kept this much
// longer than its exp, so that it is remembered for as long as the assertion could be accepted.
export const ASSERTION_LEEWAY = 30
const MAX_JTI_BYTES = 256
// Verifiers of client keys, by key: making one is most of what a check costs.
const VERIFIER_CACHE_SIZE = 10_000

/** Why an assertion was refused: a short code for the audit, and a detail for the log. */
export interface AssertionRefusal {
  reason: string
  detail: string
}

const refuse = (reason: string, detail: string): AssertionRefusal => ({ reason, detail })

/** Checks client assertions against each client's registered keys and algorithm. */
export class ClientAssertions {
  private readonly verifiers = new LRUCache<string, VerifyJws>({ max: VERIFIER_CACHE_SIZE })

  constructor(
    private readonly clock: Clock,
    private readonly replay: ReplayGuard,
    private readonly remote: RemoteJwks,
    private readonly issuer: () => string,
  ) {}

  /**
   * Undefined when `assertion` authenticates `client` (a private_key_jwt client); else why not.
   * In order: the algorithm is the client's own (never the one a header would choose, so neither
   * `none` nor a MAC), the claims (RFC 7523 §3), the signature with the client's key named by
   * kid (never a key the JWT carries), and last the jti, recorded only once the signature has
   * proved the assertion the client's, so that nobody else can spend a client's jtis.
   */
  async check(client: Client, assertion: string): Promise<AssertionRefusal | undefined> {
    const alg = client.tokenEndpointAuthSigningAlg
    if (alg === null) return refuse('no_keys', 'the client has no assertion algorithm')
    const decoded = decodeJws(assertion)
    if (decoded === undefined) return refuse('malformed', 'the assertion is not a signed JWT')
    const { header, payload } = decoded
    if (header['alg'] !== alg) return refuse('wrong_algorithm', `the assertion is signed with ${String(header['alg'])}, not ${alg}`)

    const claims = this.checkClaims(client.clientId, payload)
    if (typeof claims !== 'object' || 'reason' in claims) return claims

    const kid = typeof header['kid'] === 'string' ? header['kid'] : undefined
    const verify = await this.verifier(client, alg, kid)
    if ('reason' in verify) return verify
    try {
      verify.fn(assertion)
    } catch (err) {
      return refuse('invalid_signature', err instanceof KeyProblem ? err.message : 'the signature does not verify')
    }
    // Accepted while now (whole seconds) < exp + leeway: with a fractional exp, until that sum
    // rounded up, which is how long the jti is kept.
    const until = new Date(Math.ceil(claims.exp + ASSERTION_LEEWAY) * 1000)
    if (!(await this.replay.firstUse('client_assertion', `${client.clientId} ${claims.jti}`, until))) {
      return refuse('replayed', 'the assertion was used before (jti)')
    }
    return undefined
  }

  private checkClaims(clientId: string, p: Record<string, unknown>): { exp: number; jti: string } | AssertionRefusal {
    // RFC 7523 §3 items 1 and 2: the client is both the issuer and the subject.
    if (p['iss'] !== clientId || p['sub'] !== clientId) return refuse('wrong_issuer', 'iss and sub must be the client id')
    // Item 3, as rfc7523bis narrows it: the issuer identifier, as a single string.
    if (typeof p['aud'] !== 'string' || p['aud'] !== this.issuer()) {
      return refuse('wrong_audience', `aud must be the issuer identifier ${this.issuer()}, as a string`)
    }
    const now = epochSeconds(this.clock.now())
    const { exp, nbf, iat, jti } = p
    // Item 4: exp is required; and an assertion is for now, not for later.
    if (!isNumericDate(exp)) return refuse('no_expiry', 'exp is required')
    if (exp + ASSERTION_LEEWAY <= now) return refuse('expired', 'the assertion has expired')
    if (exp > now + MAX_ASSERTION_LIFETIME + ASSERTION_LEEWAY) {
      return refuse('too_long_lived', `exp may be at most ${MAX_ASSERTION_LIFETIME} s ahead`)
    }
    if (nbf !== undefined && (!isNumericDate(nbf) || nbf > now + ASSERTION_LEEWAY)) return refuse('not_yet_valid', 'nbf is in the future')
    if (iat !== undefined && (!isNumericDate(iat) || iat > now + ASSERTION_LEEWAY)) return refuse('not_yet_valid', 'iat is in the future')
    // Item 7, required here: replay protection needs it.
    if (typeof jti !== 'string' || jti === '' || Buffer.byteLength(jti) > MAX_JTI_BYTES) return refuse('no_jti', 'jti is required')
    return { exp, jti }
  }

  /** The verifier of the client's key that `kid` names (or its only key, without a kid). */
  private async verifier(client: Client, alg: ClientAlg, kid: string | undefined): Promise<{ fn: VerifyJws } | AssertionRefusal> {
    let keys: Record<string, unknown>[]
    if (client.jwks !== null) {
      keys = client.jwks.keys
    } else if (client.jwksUri !== null) {
      try {
        keys = (await this.remote.get(client.jwksUri)).keys
        // A kid not seen yet may be a key the client just added: fetch again (at most once per cool-down).
        if (kid !== undefined && !keys.some((k) => k['kid'] === kid)) keys = (await this.remote.get(client.jwksUri, { refresh: true })).keys
      } catch (err) {
        if (err instanceof JwksFetchError) return refuse('jwks_unavailable', `jwks_uri: ${err.message}`)
        throw err
      }
    } else {
      return refuse('no_keys', 'the client has no keys')
    }
    const candidates = kid === undefined ? keys : keys.filter((k) => k['kid'] === kid)
    if (candidates.length === 0) return refuse('unknown_key', `no key of the client has kid ${JSON.stringify(kid)}`)
    if (candidates.length > 1) return refuse('unknown_key', 'the client has several keys: the assertion must name one (kid)')
    const jwk = candidates[0]!
    const id = `${alg} ${JSON.stringify(jwk)}`
    let fn = this.verifiers.get(id)
    if (fn === undefined) {
      try {
        fn = jwsVerifier(publicKeyFor(jwk, alg), alg)
      } catch (err) {
        return refuse('unusable_key', err instanceof KeyProblem ? err.message : 'the key is not usable')
      }
      this.verifiers.set(id, fn)
    }
    return { fn }
  }
}
