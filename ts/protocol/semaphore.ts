/**
 * Counting semaphore with FIFO waiters, used on both sides of the protocol to bound work in
 * flight (uploads being buffered, downloads being sent, requests being pipelined). Units
 * allow weighting (e.g. bytes); a request larger than the capacity is admitted alone.
 */
export class Semaphore {
  private used = 0;
  private readonly waiters: Array<{ units: number; resolve: () => void }> = [];

  constructor(readonly capacity: number) {
    if (!(capacity > 0)) throw new Error('semaphore capacity must be positive');
  }

  get inUse(): number {
    return this.used;
  }

  /** Wait until `units` fit; returns the release function (idempotent). */
  async acquire(units = 1): Promise<() => void> {
    if (this.waiters.length === 0 && this.fits(units)) {
      this.used += units;
    } else {
      await new Promise<void>((resolve) => this.waiters.push({ units, resolve }));
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.used -= units;
      this.wake();
    };
  }

  private fits(units: number): boolean {
    return this.used + units <= this.capacity || this.used === 0;
  }

  private wake(): void {
    while (this.waiters.length && this.fits(this.waiters[0].units)) {
      const w = this.waiters.shift()!;
      this.used += w.units;
      w.resolve();
    }
  }
}
