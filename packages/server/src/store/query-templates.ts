import type { CompiledQuery } from 'kysely';

const MAX_TEMPLATES = 128;

/**
 * Kysely builds and compiles a query tree on every call (20–40 µs for a wide UPDATE), more than the
 * database needs to run it. The heartbeat's queries come in a handful of shapes, so each shape is
 * compiled once, with sentinel parameters, and later runs only swap the parameters in.
 */
export class QueryTemplates {
  private readonly templates = new Map<string, CompiledQuery>();

  /**
   * `build(sentinels)` must produce the query with exactly `sentinels` as its parameters, in order;
   * that is checked once per shape, so a change in how Kysely orders parameters fails loudly.
   */
  bind<R>(shape: string, parameters: readonly unknown[], build: (sentinels: readonly unknown[]) => CompiledQuery<R>): CompiledQuery<R> {
    let template = this.templates.get(shape) as CompiledQuery<R> | undefined;
    if (!template) {
      const sentinels = parameters.map((_, i) => `\u0000param${i}`);
      template = build(sentinels);
      if (template.parameters.length !== sentinels.length || template.parameters.some((p, i) => p !== sentinels[i])) {
        throw new Error(`query template ${shape}: parameters do not map one to one`);
      }
      if (this.templates.size >= MAX_TEMPLATES) this.templates.delete(this.templates.keys().next().value!);
      this.templates.set(shape, template);
    }
    return { ...template, parameters };
  }
}
