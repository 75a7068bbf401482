import { randomUUID } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Clock } from '../clock.js'
import type { Database } from '../db/schema.js'
import { OAuthError, notFound } from '../errors.js'
import { hashPassword, verifyPassword } from './passwords.js'
import { userRepository, type User } from './repository.js'

export class UserService {
  constructor(
    private readonly db: Kysely<Database>,
    private readonly clock: Clock,
  ) {}

  find(id: string): Promise<User | undefined> {
    return userRepository.find(this.db, id)
  }

  /**
   * The enabled user with this username and password, or undefined. An unknown user, a disabled
   * one and a wrong password cost one argon2 verification each, so timing tells them apart no
   * better than the answer does.
   */
  async authenticate(username: string, password: string): Promise<User | undefined> {
    const user = await userRepository.findByUsername(this.db, username)
    const ok = await verifyPassword(user?.passwordHash, password)
    return ok && user !== undefined && !user.disabled ? user : undefined
  }

  /** A new user; a taken username (case-insensitively) is a conflict. */
  async create(input: { username: string; password: string; scopes: string[] | null }): Promise<User> {
    // Hashed before any database work: argon2 is slow, and no transaction is held across it.
    const passwordHash = await hashPassword(input.password)
    const user = await userRepository.insert(
      this.db,
      { id: randomUUID(), username: input.username, passwordHash, scopes: input.scopes },
      this.clock.now(),
    )
    if (user === undefined) throw new OAuthError('conflict', 'username is taken')
    return user
  }

  async update(id: string, changes: { disabled?: boolean; scopes?: string[] | null }): Promise<User> {
    const user = await userRepository.update(this.db, id, changes, this.clock.now())
    if (user === undefined) throw notFound('user')
    return user
  }

  async setPassword(id: string, password: string): Promise<void> {
    if ((await userRepository.find(this.db, id)) === undefined) throw notFound('user')
    const passwordHash = await hashPassword(password)
    if ((await userRepository.update(this.db, id, { passwordHash }, this.clock.now())) === undefined) throw notFound('user')
  }
}
