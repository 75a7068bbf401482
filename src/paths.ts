import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

/**
 * The package root (where package.json and migrations/ live). Found by walking up because this
 * file runs both from src/ (tests, through ts-node) and from dist/src/ (the built server).
 */
function findPackageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (;;) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'migrations'))) return dir
    const parent = dirname(dir)
    if (parent === dir) throw new Error('cannot find the tessera package root')
    dir = parent
  }
}

export const packageRoot = findPackageRoot()
export const migrationsDir = join(packageRoot, 'migrations')
