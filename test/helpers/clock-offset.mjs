// Preloaded into a spawned server (`node --import <this file>`): its wall clock (Date) runs
// CLOCK_OFFSET_MS ahead of the machine's (behind, if negative), as a host whose clock is off does.
// The monotonic clock (performance.now) is left alone, as a clock step leaves it.
const offset = Number(process.env.CLOCK_OFFSET_MS ?? 0)
if (offset !== 0) {
  const RealDate = Date
  const realNow = RealDate.now
  class ShiftedDate extends RealDate {
    constructor(...args) {
      if (args.length === 0) super(realNow() + offset)
      else super(...args)
    }
    static now() {
      return realNow() + offset
    }
  }
  globalThis.Date = ShiftedDate
}
