import type { AuditRecorder } from '../../audit/events.js'
import type { Client, GrantType } from '../../clients/repository.js'
import type { ClientService } from '../../clients/service.js'
import type { TokenResponse, TokenService } from '../../tokens/service.js'
import type { UserService } from '../../users/service.js'
import type { ClientAuthThrottle } from '../../throttle/client-auth.js'
import type { LoginThrottle } from '../../throttle/login.js'
import type { PasswordHasher } from '../../users/passwords.js'
import type { ClientAssertions } from '../client-assertion.js'
import type { Dpop, DpopProof } from '../dpop.js'
import type { Params } from '../params.js'

/** What a grant handler may use. */
export interface OAuthServices {
  clients: ClientService
  users: UserService
  tokens: TokenService
  loginThrottle: LoginThrottle
  clientThrottle: ClientAuthThrottle
  hasher: PasswordHasher
  /** private_key_jwt: checks client assertions. */
  assertions: ClientAssertions
  /** DPoP proofs and nonces. */
  dpop: Dpop
  /** Security events: `audit.record({ type: 'login.failed', address, … })`. */
  audit: AuditRecorder
  issuer(): string
}

export interface GrantRequest {
  client: Client
  params: Params
  /** The network address the request came from (src/http/address.ts). */
  address: string
  services: OAuthServices
  /** The request's DPoP proof, verified: the tokens are bound to its key. */
  dpop: DpopProof | undefined
}

/** Every grant is one module of this shape. */
export interface GrantHandler {
  grantType: GrantType
  /** The parameters the grant reads besides grant_type and client authentication. */
  parameters: readonly string[]
  handle(req: GrantRequest): Promise<TokenResponse>
}
