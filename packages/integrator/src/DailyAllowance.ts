export const DAY = 86_400_000
/** Calls are counted in slots of this many milliseconds, and forgotten a whole slot at a time. */
export const SLOT = 5 * 60_000

/** As `RateBudget.Priority`: only `sync` calls may spend the reserve. */
type Priority = "sync" | "async"

/** The calls counted in one slot; `start` is a multiple of `SLOT`. */
export interface Slot {
  readonly start: number
  count: number
}

/**
 * The daily allowance: calls in 5-minute slots over a rolling 24 hours. A call is forgotten between 24 h and
 * 24 h 5 min after it was made, when its whole slot is. The last `reserve()` calls of the limit are kept for `sync`
 * calls.
 */
export interface DailyAllowance {
  /** The limit from the settings. */
  configured: number | undefined
  /** The limit the provider reported (`report`). */
  reported: number | undefined
  /** Calls counted in the slots held. */
  used: number
  /** Oldest first. */
  readonly slots: Array<Slot>
  /** The stricter of `configured` and `reported`; `undefined` without either. */
  readonly limit: () => number | undefined
  /** Calls of the limit only `sync` calls may spend. */
  readonly reserve: () => number
  /** Calls that must remain for a call of this priority to go. */
  readonly need: (priority: Priority) => number
  /** Forgets the slots that have left the last 24 hours at `now`. */
  readonly expire: (now: number) => void
  readonly canSpend: (priority: Priority) => boolean
  /** When a call of this priority may go, as far as the allowance goes (Infinity: never). */
  readonly readyAt: (priority: Priority, now: number) => number
  /** Counts `n` calls made at `now`; the slot they are in is what `refund` gives back to. */
  readonly spend: (now: number, n?: number) => Slot
  /** Gives back one call of `slot`, unless the slot is already forgotten. */
  readonly refund: (slot: Slot) => void
  /** The provider's count wins: more is added now, less is taken from the oldest slots. */
  readonly report: (used: number, limit: number, now: number) => void
}

/** An empty allowance without a limit; `reserveShare` of the limit is kept for `sync` calls. */
export const make = (reserveShare: number): DailyAllowance => {
  const slots: Array<Slot> = []
  const self: DailyAllowance = {
    configured: undefined,
    reported: undefined,
    used: 0,
    slots,
    limit: () =>
      self.configured === undefined
        ? self.reported
        : self.reported === undefined
        ? self.configured
        : Math.min(self.configured, self.reported),
    reserve: () => {
      const limit = self.limit()
      return limit === undefined ? 0 : Math.floor(limit * reserveShare)
    },
    need: (priority) => priority === "sync" ? 1 : self.reserve() + 1,
    expire: (now) => {
      while (slots.length > 0 && slots[0]!.start + SLOT + DAY <= now) self.used -= slots.shift()!.count
    },
    canSpend: (priority) => {
      const limit = self.limit()
      return limit === undefined || limit - self.used >= self.need(priority)
    },
    readyAt: (priority, now) => {
      const limit = self.limit()
      if (limit === undefined) return now
      const target = limit - self.need(priority)
      let used = self.used
      if (used <= target) return now
      for (const slot of slots) {
        used -= slot.count
        if (used <= target) return slot.start + SLOT + DAY
      }
      return Infinity
    },
    spend: (now, n = 1) => {
      const start = now - (now % SLOT)
      let slot = slots[slots.length - 1]
      if (slot === undefined || slot.start !== start) slots.push(slot = { start, count: 0 })
      slot.count += n
      self.used += n
      return slot
    },
    refund: (slot) => {
      if (slot.count > 0 && slots.includes(slot)) {
        slot.count -= 1
        self.used -= 1
      }
    },
    report: (used, limit, now) => {
      self.reported = limit
      self.expire(now)
      const diff = used - self.used
      if (diff > 0) self.spend(now, diff)
      let excess = -diff
      for (const slot of slots) {
        if (excess <= 0) break
        const take = Math.min(slot.count, excess)
        slot.count -= take
        self.used -= take
        excess -= take
      }
      while (slots.length > 0 && slots[0]!.count === 0) slots.shift()
    }
  }
  return self
}
