// The pending ready() promises of a client or a subscription: they settle
// together when it gets ready or stops, or each on its own timeout.

import { TimeoutError } from './errors.js';

interface Waiter {
  resolve: () => void;
  reject: (err: Error) => void;
}

const noop = (): void => {};

/** A promise rejected with err whose rejection counts as handled. */
export function rejected(err: Error): Promise<never> {
  const p = Promise.reject(err);
  p.catch(noop);
  return p;
}

/** Waiters holds promises until resolveAll or rejectAll settles them. */
export class Waiters {
  #list: Waiter[] = [];

  /**
   * A promise that the next resolveAll or rejectAll settles; with
   * timeoutMs, one rejected with a TimeoutError carrying timeoutMessage
   * after timeoutMs unless settled first. Its rejection counts as handled.
   */
  wait(timeoutMs: number | undefined, timeoutMessage: string): Promise<void> {
    const p = new Promise<void>((resolve, reject) => {
      const w: Waiter = { resolve, reject };
      this.#list.push(w);
      if (timeoutMs !== undefined) {
        const t = setTimeout(() => {
          this.#list = this.#list.filter((x) => x !== w);
          reject(new TimeoutError(timeoutMessage));
        }, timeoutMs);
        w.resolve = () => {
          clearTimeout(t);
          resolve();
        };
        w.reject = (e) => {
          clearTimeout(t);
          reject(e);
        };
      }
    });
    p.catch(noop);
    return p;
  }

  /** Resolves every pending promise. */
  resolveAll(): void {
    const ws = this.#list;
    this.#list = [];
    for (const w of ws) w.resolve();
  }

  /** Rejects every pending promise with err. */
  rejectAll(err: Error): void {
    const ws = this.#list;
    this.#list = [];
    for (const w of ws) w.reject(err);
  }
}
