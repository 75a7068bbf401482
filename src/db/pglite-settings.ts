import { setFlagsFromString } from 'node:v8'

// How the embedded database is run. Each setting here was measured (resident memory from
// /proc/PID/status); the numbers are in the comments.

/**
 * Appended to PGlite's own start parameters (PGlite.defaultStartParams, which it needs: without
 * them it does not start). Command-line settings win over the stored postgresql.conf, which is
 * left as initdb wrote it.
 *
 * shared_buffers: PGlite's 128 MB buffer pool is touched (so resident) in full at start; 16 MB
 * holds Tessera's working set and saves about 120 MB. Other settings were measured and left at
 * their defaults: wal_buffers follows shared_buffers (4 MB → 512 kB by itself), temp_buffers,
 * work_mem and maintenance_work_mem are allocated only when a query needs them, so none of them
 * moved the resident size; max_connections=10 saved about 2 MB, not worth shrinking the lock
 * table for.
 */
export const EMBEDDED_START_PARAMS: readonly string[] = ['-c', 'shared_buffers=16MB']

/**
 * For initdb, which probes shared_buffers by starting Postgres with 128 MB and so grows its
 * WebAssembly heap: with the same 16 MB the first start's init process peaks at about 377 MB
 * instead of 413. initdb also writes this value into the new cluster's postgresql.conf, where
 * PGlite's default is 128MB (Tessera passes it on the command line at every start anyway; an
 * existing cluster's configuration is never rewritten).
 */
export const INITDB_PARAMS: readonly string[] = ['-c', 'shared_buffers=16MB']

/**
 * Runs PGlite (Postgres compiled to WebAssembly) on V8's baseline compiler only. By default V8
 * recompiles the hot Postgres functions with its optimising compiler, and that code and the
 * compilations' memory stay resident: the server held 200 to 225 MB once listening, against 145
 * to 170 MB without, and a standalone PGlite grew to 240-270 MB over 11,000 queries, against
 * 165-180 MB. The optimised code saved only 4-7% of CPU per query there: a query's cost is mostly
 * the crossing into the database and back. Process-wide, so it is set before the module is first
 * compiled, and only in embedded mode (nothing else in the process is WebAssembly).
 */
export function useBaselineWasmCompiler(): void {
  setFlagsFromString('--liftoff-only')
}
