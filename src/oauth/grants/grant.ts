import type { AuditRecorder, Origin } from '../../audit/events.js'
import type { Client, GrantType } from '../../clients/repository.js'
import type { ClientService } from '../../clients/service.js'
import type { TokenResponse, TokenService } from '../../tokens/service.js'
import type { UserService } from '../../users/service.js'
import type { LoginThrottle } from '../../users/throttle.js'
import type { Params } from '../params.js'

/** What a grant handler may use. */
export interface OAuthServices {
  clients: ClientService
  users: UserService
  tokens: TokenService
  loginThrottle: LoginThrottle
  /** Security events: `audit.record({ type: 'login.failed', address: origin.address, … })`. */
  audit: AuditRecorder
  issuer(): string
}

export interface GrantRequest {
  client: Client
  params: Params
  services: OAuthServices
  /** Where the request came from (`{ address: request.ip }`), for the security events it causes. */
  origin?: Origin | undefined
}

/** Every grant is one module of this shape. */
export interface GrantHandler {
  grantType: GrantType
  /** The parameters the grant reads besides grant_type and client authentication. */
  parameters: readonly string[]
  handle(req: GrantRequest): Promise<TokenResponse>
}
