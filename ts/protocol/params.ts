/**
 * API parameters (spec protocol.md §1): encoding as the PBS client does (`json_object_to_query`:
 * booleans `true`/`false`, decimal numbers, form-urlencoded strings, arrays as repeated keys),
 * and schema-checked parsing as the PBS server does (`parse_parameter_strings` for form data
 * and query strings, `verify_json` for JSON bodies).
 *
 * Invariants of `parseParams`: unknown keys, duplicate scalar keys, missing required keys and
 * values outside their schema are refused with one `HttpError(400)` that names every bad key;
 * the result only holds keys of the schema, typed as the schema says.
 */
import { HttpError } from './errors.js';

export type ParamSchema =
  | { type: 'integer'; optional?: boolean; min?: number; max?: number }
  | { type: 'boolean'; optional?: boolean }
  | { type: 'string'; optional?: boolean; check?: (value: string) => void }
  | { type: 'integer-array'; optional?: boolean; min?: number }
  | { type: 'string-array'; optional?: boolean; check?: (value: string) => void };

export type ObjectSchema = Readonly<Record<string, ParamSchema>>;

export type ParamValue = number | boolean | string | number[] | string[];
export type Params = Record<string, ParamValue>;

/** A value the client may put into a query string. */
export type QueryValue = string | number | boolean | ReadonlyArray<string | number> | undefined | null;

/** Form-urlencode `params` (undefined/null values are left out, arrays become repeated keys). */
export function encodeQuery(params: Readonly<Record<string, QueryValue>>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null) continue;
    if (Array.isArray(v)) for (const item of v) q.append(k, String(item));
    else q.append(k, String(v));
  }
  return q.toString();
}

const TRUE = new Set(['1', 'true', 'yes', 'on', 'y']);
const FALSE = new Set(['0', 'false', 'no', 'off', 'n']);

function parseBoolean(s: string): boolean {
  const l = s.toLowerCase();
  if (TRUE.has(l)) return true;
  if (FALSE.has(l)) return false;
  throw new Error(`unable to parse boolean '${s}'`);
}

function parseIntegerText(s: string): number {
  if (!/^-?[0-9]{1,16}$/.test(s)) throw new Error(`value '${s}' is not an integer`);
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new Error(`value '${s}' is out of range`);
  return n;
}

function checkRange(n: number, schema: { min?: number; max?: number }): number {
  if (schema.min !== undefined && n < schema.min) throw new Error(`value must have a minimum value of ${schema.min} (got ${n})`);
  if ('max' in schema && schema.max !== undefined && n > schema.max) {
    throw new Error(`value must have a maximum value of ${schema.max} (got ${n})`);
  }
  return n;
}

function fromText(schema: ParamSchema, values: string[]): ParamValue {
  switch (schema.type) {
    case 'integer':
      return checkRange(parseIntegerText(values[0]), schema);
    case 'boolean':
      return parseBoolean(values[0]);
    case 'string':
      schema.check?.(values[0]);
      return values[0];
    case 'integer-array':
      return values.map((v) => checkRange(parseIntegerText(v), schema));
    case 'string-array':
      for (const v of values) schema.check?.(v);
      return values;
  }
}

function fromJson(schema: ParamSchema, v: unknown): ParamValue {
  const integer = (x: unknown): number => {
    if (typeof x !== 'number' || !Number.isSafeInteger(x)) throw new Error(`expected an integer, got ${JSON.stringify(x)}`);
    return x;
  };
  switch (schema.type) {
    case 'integer':
      return checkRange(integer(v), schema);
    case 'boolean':
      if (typeof v !== 'boolean') throw new Error(`expected a boolean, got ${JSON.stringify(v)}`);
      return v;
    case 'string':
      if (typeof v !== 'string') throw new Error(`expected a string, got ${typeof v}`);
      schema.check?.(v);
      return v;
    case 'integer-array':
      if (!Array.isArray(v)) throw new Error('expected an array');
      return v.map((x) => checkRange(integer(x), schema));
    case 'string-array':
      if (!Array.isArray(v)) throw new Error('expected an array');
      return v.map((x) => {
        if (typeof x !== 'string') throw new Error(`expected an array of strings, got ${typeof x}`);
        schema.check?.(x);
        return x;
      });
  }
}

function fail(errors: string[]): never {
  throw new HttpError(400, `parameter verification failed - ${errors.join('; ')}`);
}

/**
 * Check `input` against `schema`: `entries` (query string / form body, values as text) or a
 * parsed JSON object (values typed).
 */
export function parseParams(schema: ObjectSchema, input: Iterable<[string, string]> | Record<string, unknown>, source: 'form' | 'json'): Params {
  const errors: string[] = [];
  const out: Params = {};
  if (source === 'form') {
    const grouped = new Map<string, string[]>();
    for (const [k, v] of input as Iterable<[string, string]>) {
      const list = grouped.get(k);
      if (list) list.push(v);
      else grouped.set(k, [v]);
    }
    for (const [k, values] of grouped) {
      const s = Object.hasOwn(schema, k) ? schema[k] : undefined;
      if (!s) {
        errors.push(`'${k}': schema does not allow additional properties`);
        continue;
      }
      if (values.length > 1 && s.type !== 'integer-array' && s.type !== 'string-array') {
        errors.push(`'${k}': duplicate parameter`);
        continue;
      }
      try {
        out[k] = fromText(s, values);
      } catch (e) {
        errors.push(`'${k}': ${(e as Error).message}`);
      }
    }
  } else {
    for (const [k, v] of Object.entries(input as Record<string, unknown>)) {
      const s = Object.hasOwn(schema, k) ? schema[k] : undefined;
      if (!s) {
        errors.push(`'${k}': schema does not allow additional properties`);
        continue;
      }
      try {
        out[k] = fromJson(s, v);
      } catch (e) {
        errors.push(`'${k}': ${(e as Error).message}`);
      }
    }
  }
  for (const [k, s] of Object.entries(schema)) {
    if (!s.optional && !Object.hasOwn(out, k) && !errors.some((e) => e.startsWith(`'${k}'`))) {
      errors.push(`'${k}': parameter is missing and it is not optional`);
    }
  }
  if (errors.length) fail(errors);
  return out;
}

/** Typed accessors for parsed parameters (the schema guarantees the type). */
export const param = {
  int(p: Params, k: string): number {
    return p[k] as number;
  },
  optInt(p: Params, k: string): number | undefined {
    return p[k] as number | undefined;
  },
  str(p: Params, k: string): string {
    return p[k] as string;
  },
  optStr(p: Params, k: string): string | undefined {
    return p[k] as string | undefined;
  },
  bool(p: Params, k: string, dflt = false): boolean {
    return (p[k] as boolean | undefined) ?? dflt;
  },
  ints(p: Params, k: string): number[] {
    return (p[k] as number[] | undefined) ?? [];
  },
  strs(p: Params, k: string): string[] {
    return (p[k] as string[] | undefined) ?? [];
  },
};
