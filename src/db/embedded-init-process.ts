// The init process: creates a new embedded database cluster in the empty directory named by its
// argument, reports its peak resident memory to the parent over IPC, and exits. It runs as a
// process of its own because initdb inside PGlite leaves a few hundred MB of garbage (a second
// PGlite, a copy of its heap) that a long-lived, mostly idle server would carry forever.
import { mkdirSync } from 'node:fs'
import { PGlite, MemoryFS, type postgresMod } from '@electric-sql/pglite'
import { EMBEDDED_START_PARAMS, INITDB_PARAMS, useBaselineWasmCompiler } from './pglite-settings.js'

type PostgresMod = postgresMod.PostgresMod

export type InitReport = { ok: true; peakRssBytes: number } | { ok: false; error: string }

/**
 * PGlite's in-memory filesystem, with the data directory mounted from disk. PGlite runs initdb
 * straight into the data directory only for its in-memory filesystem; with its Node filesystem
 * it runs initdb in memory, then copies the result through a tar archive (about 150 MB more at
 * the peak). Mounting the disk where the in-memory filesystem keeps PGDATA gets the direct path
 * and still writes to disk. The mount is what PGlite's own NodeFS does.
 */
class DiskBackedMemoryFS extends MemoryFS {
  constructor(private readonly root: string) {
    super()
  }

  override async init(pg: PGlite, opts: Partial<PostgresMod>): Promise<{ emscriptenOpts: Partial<PostgresMod> }> {
    this.pg = pg
    const mountDisk = (mod: PostgresMod) => {
      mod.FS.mkdirTree(PGlite.paths.PGDATA)
      mod.FS.mount(mod.NODEFS, { root: this.root }, PGlite.paths.PGDATA)
    }
    return { emscriptenOpts: { ...opts, preRun: [...(opts.preRun ?? []), mountDisk] } }
  }

  private settled = false

  /**
   * PGlite calls this first right after initdb, before it starts its own session. What initdb
   * needed (a second PGlite and a 128 MB copy of its heap, about 260 MB) is garbage by then, but
   * nothing prompts V8 to collect it before the session adds its own memory on top; collecting
   * here keeps the peak at initdb's. PGlite lets go of it a few milliseconds later at times, so
   * this collects until the heap copy is gone, for at most 200 ms. (The parent starts this
   * process with --expose-gc.)
   */
  override async syncToFs(): Promise<void> {
    if (this.settled || globalThis.gc === undefined) return
    this.settled = true
    const before = process.memoryUsage().arrayBuffers
    for (let i = 0; i < 20 && process.memoryUsage().arrayBuffers > before - 64 * 1024 * 1024; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10))
      globalThis.gc()
    }
  }
}

async function createCluster(dir: string): Promise<void> {
  // Fails if it exists: the parent names a new directory for every attempt.
  mkdirSync(dir, { mode: 0o700 })
  useBaselineWasmCompiler()
  const pglite = await PGlite.create({
    fs: new DiskBackedMemoryFS(dir),
    startParams: [...PGlite.defaultStartParams, ...EMBEDDED_START_PARAMS],
    initDbStartParams: [...INITDB_PARAMS],
  })
  await pglite.close()
}

const report = (message: InitReport) =>
  new Promise<void>((resolve) => {
    if (process.send === undefined) resolve()
    else process.send(message, () => resolve())
  })

// The parent is gone (killed during the first start): nobody will use this directory, and the
// next start removes it.
process.once('disconnect', () => process.exit(1))

const dir = process.argv[2]
let result: InitReport
try {
  if (dir === undefined) throw new Error('usage: embedded-init-process <empty directory>')
  await createCluster(dir)
  // ru_maxrss, in KiB on Linux: the same figure as VmHWM in /proc/self/status.
  result = { ok: true, peakRssBytes: process.resourceUsage().maxRSS * 1024 }
} catch (err) {
  // Emscripten throws plain objects too ({ name: 'ErrnoError', errno: 44 }).
  const error = err instanceof Error ? err.message : typeof err === 'object' ? JSON.stringify(err) : String(err)
  result = { ok: false, error }
}
await report(result)
process.exit(result.ok ? 0 : 1)
