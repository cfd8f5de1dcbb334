import { Ajv, type ErrorObject } from 'ajv';
import addFormatsModule from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

const addFormats = addFormatsModule as unknown as (ajv: Ajv) => Ajv;

function makeAjv(coerceTypes: boolean): Ajv {
  // Bodies are strict: "85" is not 85. Query strings and path parameters arrive as text and are coerced.
  const ajv = new Ajv({ coerceTypes, useDefaults: true, removeAdditional: false, allErrors: false, strict: false });
  addFormats(ajv);
  return ajv;
}

const strictAjv = makeAjv(false);
const coercingAjv = makeAjv(true);

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? strictAjv : coercingAjv).compile(schema as object);

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
  if (error.keyword === 'anyOf' || error.keyword === 'type') {
    return `${field}: ${error.message ?? 'has the wrong type'}`;
  }
  return `${field}: ${error.message ?? 'is invalid'}`;
}
