import { parseTimestamp } from '@dumont/protocol';
import { _, Ajv, type ErrorObject, type KeywordCxt, type ValidateFunction } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

/**
 * Bodies whose unknown fields are dropped rather than refused: an agent newer than this server may send
 * fields it does not know yet, and a refused heartbeat would take the instance offline. Every other body
 * is an operator's request, where an unknown field is a typo worth a 400.
 */
const DROPS_UNKNOWN_FIELDS = new Set(['POST /api/v1/agent/status']);

/**
 * Set on every string of a request schema. PostgreSQL's `text` cannot hold U+0000, and SQLite can: such
 * a string would be a 500 on one store and stored on the other. Operator requests are refused (400
 * naming the field); a heartbeat, which an agent repeats until it is taken, gets U+FFFD instead, so a
 * hook's binary output in a command result can never wedge an instance.
 */
const NUL_KEYWORD = 'x-dumont-nul';
type NulMode = 'refuse' | 'replace';
const NUL_MESSAGE = 'must not contain U+0000 (NUL)';

/** `x-max-json-bytes` (a command's `args`): the value's size as JSON text, in UTF-8 bytes. */
const jsonBytesRule = Object.assign(
  (max: number, value: unknown): boolean => {
    let bytes: number;
    try {
      bytes = Buffer.byteLength(JSON.stringify(value) ?? '');
    } catch {
      // Too deep to write out: over HTTP the depth limit refuses that before, other callers get false.
      bytes = Infinity;
    }
    if (bytes <= max) return true;
    jsonBytesRule.errors = [{ keyword: 'x-max-json-bytes', message: `must be at most ${max} bytes as JSON`, params: { limit: max } }];
    return false;
  },
  { errors: undefined as Partial<ErrorObject>[] | undefined },
);

function makeAjv(options: { coerceTypes: boolean; removeAdditional: boolean }): Ajv {
  const ajv = new Ajv({ ...options, useDefaults: true, allErrors: false, strict: false });
  addFormats(ajv);
  // The services read timestamps with parseTimestamp; the schema must never accept one it cannot read.
  ajv.addFormat('date-time', { type: 'string', validate: (text: string) => parseTimestamp(text) !== null });
  ajv.addKeyword({
    keyword: NUL_KEYWORD,
    type: 'string',
    schemaType: 'string',
    error: { message: NUL_MESSAGE },
    // Generated inline, not a function call: it runs on every string of every heartbeat.
    code(cxt: KeywordCxt) {
      const { gen, data, it } = cxt;
      const hasNul = _`${data}.includes(${'\u0000'})`;
      if ((cxt.schema as NulMode) === 'replace' && it.dataLevel > 0) {
        gen.if(hasNul, () => {
          gen.assign(data, _`${data}.replaceAll(${'\u0000'}, ${'\uFFFD'})`);
          gen.assign(_`${it.parentData}[${it.parentDataProperty}]`, data);
        });
      } else {
        cxt.fail(hasNul);
      }
    },
  });
  ajv.addKeyword({ keyword: 'x-max-json-bytes', schemaType: 'number', errors: true, validate: jsonBytesRule });
  return ajv;
}

// Bodies are strict JSON: "85" is not 85. Query strings and path parameters arrive as text and are
// converted by `strictNumbers` below before this coercing instance sees them.
const refusingAjv = makeAjv({ coerceTypes: false, removeAdditional: false });
const droppingAjv = makeAjv({ coerceTypes: false, removeAdditional: true });
const coercingAjv = makeAjv({ coerceTypes: true, removeAdditional: false });

type Schema = Record<string, unknown>;
const isSchema = (value: unknown): value is Schema => typeof value === 'object' && value !== null && !Array.isArray(value);
const typesOf = (schema: Schema): unknown[] => (Array.isArray(schema.type) ? schema.type : [schema.type]);

const SCHEMA_MAPS = ['properties', 'patternProperties', '$defs', 'definitions'];
const SCHEMA_LISTS = ['anyOf', 'allOf', 'oneOf', 'prefixItems'];
const SCHEMA_ONES = ['items', 'additionalProperties', 'not', 'if', 'then', 'else', 'contains', 'propertyNames'];

/**
 * A copy of a request schema with the house rules made explicit: objects that do not say otherwise are
 * closed (`additionalProperties: false`; a refusing validator then names the field, a dropping one
 * removes it) and strings carry the NUL rule. Only schema positions are walked, never `default` or
 * `const` values. The route's own schema object is left as it is, so the OpenAPI description is too.
 */
function withHouseRules(schema: unknown, nul: NulMode): unknown {
  if (!isSchema(schema)) return schema;
  const out: Schema = { ...schema };
  for (const key of SCHEMA_MAPS) {
    if (isSchema(out[key])) {
      out[key] = Object.fromEntries(Object.entries(out[key]).map(([name, s]) => [name, withHouseRules(s, nul)]));
    }
  }
  for (const key of SCHEMA_LISTS) {
    if (Array.isArray(out[key])) out[key] = (out[key] as unknown[]).map((s) => withHouseRules(s, nul));
  }
  for (const key of SCHEMA_ONES) {
    if (Array.isArray(out[key])) out[key] = (out[key] as unknown[]).map((s) => withHouseRules(s, nul));
    else if (isSchema(out[key])) out[key] = withHouseRules(out[key], nul);
  }
  if (isSchema(out.properties) && out.additionalProperties === undefined && out.patternProperties === undefined) {
    out.additionalProperties = false;
  }
  if (typesOf(out).includes('string')) out[NUL_KEYWORD] = nul;
  return out;
}

/** Plain decimal digits: no sign, exponent, hex, fraction, whitespace or empty text. */
const DECIMAL_INTEGER = /^[0-9]+$/;
const DECIMAL_NUMBER = /^[0-9]+(?:\.[0-9]+)?$/;

type Validator = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null };

/**
 * Query strings and path parameters arrive as text. Ajv's coercion reads them with `+text`, so
 * `minutes=0x10` was 16, `1e3` was 1000 and `/instances/0xC351` instance 50001. Numeric fields are
 * converted here, from plain decimal text only; anything else is refused naming the field, before
 * the coercing validator can read it its own way.
 */
function strictNumbers(schema: unknown, validate: ValidateFunction): Validator {
  const properties = isSchema(schema) && isSchema(schema.properties) ? schema.properties : {};
  const numeric: [string, RegExp, string][] = [];
  for (const [name, s] of Object.entries(properties)) {
    if (!isSchema(s)) continue;
    const types = typesOf(s);
    if (types.includes('integer')) numeric.push([name, DECIMAL_INTEGER, 'integer']);
    else if (types.includes('number')) numeric.push([name, DECIMAL_NUMBER, 'number']);
  }
  const wrapped: Validator = (data) => {
    if (isSchema(data)) {
      for (const [name, pattern, type] of numeric) {
        const value = data[name];
        if (typeof value !== 'string') continue;
        if (!pattern.test(value)) {
          wrapped.errors = [
            {
              instancePath: `/${name}`,
              schemaPath: `#/properties/${name}/type`,
              keyword: 'type',
              params: { type },
              message: type === 'integer' ? 'must be an integer in plain decimal digits' : 'must be a number in plain decimal digits',
            },
          ];
          return false;
        }
        data[name] = Number(value);
      }
    }
    const valid = validate(data);
    wrapped.errors = validate.errors;
    return valid;
  };
  return wrapped;
}

// Fastify compiles one validator per route and part; InstanceIdParams alone serves six routes.
const compiled = new Map<string, WeakMap<object, Validator>>();

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart, method, url }) => {
  const drops = httpPart === 'body' && DROPS_UNKNOWN_FIELDS.has(`${String(method).toUpperCase()} ${url}`);
  const kind = httpPart === 'body' ? (drops ? 'drop' : 'refuse') : 'text';
  let cache = compiled.get(kind);
  if (!cache) compiled.set(kind, (cache = new WeakMap()));
  const hit = isSchema(schema) ? cache.get(schema) : undefined;
  if (hit) return hit;

  let validator: Validator;
  if (httpPart === 'body') {
    const prepared = withHouseRules(schema, drops ? 'replace' : 'refuse') as object;
    validator = (drops ? droppingAjv : refusingAjv).compile(prepared) as Validator;
  } else {
    // Unknown query parameters stay ignored: nothing in a query string is stored.
    const prepared = withHouseRules({ ...(schema as Schema), additionalProperties: true }, 'refuse');
    validator = strictNumbers(prepared, coercingAjv.compile(prepared as object));
  }
  if (isSchema(schema)) cache.set(schema, validator);
  return validator;
};

/**
 * Deepest nesting of objects and arrays a JSON body may have. A heartbeat needs 3, a command's `args`
 * gets the rest. About 8,000 levels fit in 64 KiB, enough to overflow the stack of every recursive
 * walk behind the parser (JSON.stringify, the store) and answer 500.
 */
export const MAX_JSON_DEPTH = 32;

/**
 * Whether the text holds more than `limit` opening brackets, strings included: when it does not, nothing
 * can nest deeper. A typical heartbeat has a dozen, and indexOf finds them far faster than the scan
 * below reads its characters.
 */
function hasMoreOpenersThan(text: string, limit: number): boolean {
  let count = 0;
  for (const opener of ['{', '[']) {
    for (let i = text.indexOf(opener); i !== -1; i = text.indexOf(opener, i + 1)) if (++count > limit) return true;
  }
  return false;
}

/**
 * Whether a JSON text nests objects/arrays deeper than `limit`, read before anything walks the parsed
 * value. Brackets inside strings do not count; a quote ends a string only after an even run of
 * backslashes. It sits on every heartbeat, so it allocates nothing and jumps over strings with
 * indexOf. Text that is not JSON may be misread here, but JSON.parse refuses it next anyway.
 */
export function nestsDeeperThan(text: string, limit: number): boolean {
  if (text.length <= limit || !hasMoreOpenersThan(text, limit)) return false;
  const length = text.length;
  let depth = 0;
  let i = 0;
  while (i < length) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let end = text.indexOf('"', i + 1);
      for (;;) {
        if (end === -1) return false;
        let k = end - 1;
        while (text.charCodeAt(k) === 0x5c /* \ */) k--;
        if ((end - 1 - k) % 2 === 0) break;
        end = text.indexOf('"', end + 1);
      }
      i = end + 1;
      continue;
    }
    if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      if (++depth > limit) return true;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      depth--;
    }
    i++;
  }
  return false;
}

/** `/gpu_metrics/utilization_percent` (+ a missing property) → `gpu_metrics.utilization_percent`. */
export function fieldOf(error: ErrorObject | undefined, context: string | undefined): string {
  if (!error) return context ?? 'body';
  const parts = error.instancePath.split('/').filter(Boolean);
  const missing = (error.params as { missingProperty?: string }).missingProperty;
  if (missing) parts.push(missing);
  const extra = (error.params as { additionalProperty?: string }).additionalProperty;
  if (extra) parts.push(extra);
  return parts.length > 0 ? parts.join('.') : (context ?? 'body');
}

export function describeValidationError(error: ErrorObject | undefined, field: string): string {
  if (!error) return `${field}: invalid`;
  if (error.keyword === 'required') return `${field}: is required`;
  if (error.keyword === 'additionalProperties') return `${field}: unknown field`;
  if (error.keyword === 'minProperties') return `${field}: nothing to change; give at least one field`;
  if (error.keyword === 'anyOf' || error.keyword === 'type') {
    return `${field}: ${error.message ?? 'has the wrong type'}`;
  }
  return `${field}: ${error.message ?? 'is invalid'}`;
}
