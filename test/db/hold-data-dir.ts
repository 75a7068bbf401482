// Holds DATA_DIR's lock (argv[2]) until killed, as a server does: prints "held <pid>" once it
// has it, or "refused <message>" and exits 3. A child of test/db/data-dir-lock.test.ts.
import { DataDirInUseError, lockDataDir } from '../../src/db/data-dir-lock.js'

try {
  await lockDataDir(process.argv[2]!)
  process.stdout.write(`held ${process.pid}\n`)
  setInterval(() => {}, 60_000)
} catch (err) {
  if (!(err instanceof DataDirInUseError)) throw err
  process.stdout.write(`refused ${err.message}\n`)
  process.exit(3)
}
