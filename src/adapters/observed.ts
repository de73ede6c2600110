import { performance } from "node:perf_hooks";

/** One finished call of a port method: which method, whether its promise resolved, how long it took. */
export interface ObservedCall {
  operation: string;
  outcome: "ok" | "error";
  seconds: number;
}

/**
 * Wraps a port object (the Db, or any other) so that every method returning a promise is timed: `observe` hears of
 * each call when its promise settles, labelled with the method's name. Methods that return anything else, and
 * properties, pass through untouched; calls the object makes on itself are not counted twice. The wrapper knows no
 * method by name, so it keeps working whatever the port grows or is split into.
 */
export function observed<T extends object>(target: T, observe: (call: ObservedCall) => void): T {
  const wrappers = new Map<PropertyKey, unknown>();
  return new Proxy(target, {
    get(object, property) {
      const value: unknown = Reflect.get(object, property, object);
      if (typeof value !== "function" || property === "constructor") return value;
      let wrapper = wrappers.get(property);
      if (!wrapper) {
        const operation = String(property);
        const method = value as (...args: unknown[]) => unknown;
        wrapper = function (this: unknown, ...args: unknown[]): unknown {
          const started = performance.now();
          const result = method.apply(object, args);
          if (!(result instanceof Promise)) return result;
          const done = (outcome: ObservedCall["outcome"]) =>
            observe({ operation, outcome, seconds: (performance.now() - started) / 1000 });
          result.then(
            () => done("ok"),
            () => done("error"),
          );
          return result;
        };
        wrappers.set(property, wrapper);
      }
      return wrapper;
    },
  });
}
