import { expect } from "vitest";

/** Awaits a promise that must reject with an error of `cls` whose `kind` is `kind`; returns the error. */
export async function expectKind<E extends Error & { kind: string }>(
  promise: Promise<unknown>,
  cls: abstract new (...args: never[]) => E,
  kind: E["kind"],
): Promise<E> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(cls);
  expect((err as E).kind).toBe(kind);
  return err as E;
}
