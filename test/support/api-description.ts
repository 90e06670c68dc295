import { Ajv2020, type ValidateFunction } from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

/*
 * Checking values against the schemas of bindwatch's OpenAPI 3.1 document with a JSON
 * Schema 2020-12 validator (ajv), the dialect OpenAPI 3.1 uses. The document's
 * `#/components/schemas/X` refs are resolved as `$defs`; objects the document leaves
 * open are closed here, so an answer that carries an undocumented field fails too.
 */

/** The parts of an OpenAPI 3.1 document these checks read. */
export interface ApiDocument {
  readonly openapi: string;
  readonly paths: Record<string, Record<string, Operation>>;
  readonly components: { readonly schemas: Record<string, Schema>; readonly securitySchemes?: Record<string, unknown> };
  readonly webhooks?: Record<string, Record<string, Operation>>;
}

export type Schema = Record<string, unknown>;

export interface Operation {
  readonly operationId?: string;
  readonly parameters?: readonly { name: string; in: string; required?: boolean; schema: Schema }[];
  readonly requestBody?: { content: Record<string, { schema: Schema }> };
  readonly responses: Record<string, DocumentedResponse>;
  readonly security?: readonly Record<string, unknown>[];
}

export interface DocumentedResponse {
  readonly description: string;
  readonly headers?: Record<string, { required?: boolean; schema: Schema }>;
  readonly content?: Record<string, { schema: Schema }>;
}

const METHODS = ["get", "put", "post", "delete", "patch", "head", "options", "trace"];

/** Every operation of the document's paths: `"<METHOD> <path>"` and the operation. */
export function operationsOf(doc: ApiDocument): [string, Operation][] {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([method]) => METHODS.includes(method))
      .map(([method, op]): [string, Operation] => [`${method.toUpperCase()} ${path}`, op]),
  );
}

/** A deep copy with every open object schema closed (`additionalProperties: false`). */
function closed(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(closed);
  if (value === null || typeof value !== "object") return value;
  const out: Record<string, unknown> = {};
  for (const [key, inner] of Object.entries(value)) {
    // A schema's `properties` map names properties, it is not a schema: recurse into its values only.
    out[key] =
      key === "properties" || key === "$defs"
        ? Object.fromEntries(Object.entries(inner as object).map(([k, v]) => [k, closed(v)]))
        : closed(inner);
  }
  const type = out.type;
  const isObject = type === "object" || (Array.isArray(type) && type.includes("object"));
  if (isObject && out.properties !== undefined && out.additionalProperties === undefined) {
    out.additionalProperties = false;
  }
  return out;
}

/**
 * Validators for the schemas of `doc`.
 * @example const check = createSchemaChecker(doc); check(doc.components.schemas.BindState, state) // [] when valid
 */
export function createSchemaChecker(doc: ApiDocument): (schema: Schema, value: unknown) => string[] {
  const ajv = new Ajv2020({ strict: true, allErrors: true });
  addFormats.default(ajv);
  const asDefs = (schema: unknown) =>
    JSON.parse(JSON.stringify(closed(schema)).replaceAll('"#/components/schemas/', '"#/$defs/')) as Schema;
  const $defs = asDefs(doc.components.schemas);
  const compiled = new Map<Schema, ValidateFunction>();
  return (schema, value) => {
    let validate = compiled.get(schema);
    if (!validate) {
      validate = ajv.compile({ ...asDefs(schema), $defs });
      compiled.set(schema, validate);
    }
    if (validate(value)) return [];
    return (validate.errors ?? []).map((e) => `${e.instancePath || "(root)"} ${e.message ?? e.keyword}`);
  };
}
