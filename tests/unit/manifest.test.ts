import { describe, expect, it } from "vitest";
import { manifestJsonSchema, manifestSchema } from "../../workers/shared/domain/manifest";
import { manifest } from "../helpers";

interface ObjectSchema {
  type?: string;
  properties?: Record<string, ObjectSchema & { const?: unknown; pattern?: string }>;
  required?: string[];
  additionalProperties?: unknown;
}

describe("manifestJsonSchema", () => {
  it("describes an object with apiVersion, kind, metadata and spec", () => {
    const schema = manifestJsonSchema() as ObjectSchema & { $id?: string; $schema?: string; title?: string };
    expect(schema.type).toBe("object");
    expect(Object.keys(schema.properties ?? {}).sort()).toEqual(["apiVersion", "kind", "metadata", "spec"]);
    expect(schema.required).toEqual(expect.arrayContaining(["apiVersion", "kind", "metadata", "spec"]));
    expect(schema.$id).toBe("https://soma.dev/schemas/capsule.json");
    expect(schema.$schema).toMatch(/json-schema\.org/);
    expect(schema.title).toContain("capsule.yaml");
  });

  it("pins apiVersion and kind and refuses unknown fields, like the zod schema", () => {
    const schema = manifestJsonSchema() as ObjectSchema;
    expect(schema.properties?.apiVersion?.const).toBe("soma.dev/v1");
    expect(schema.properties?.kind?.const).toBe("TaskCapsule");
    expect(schema.additionalProperties).toBe(false);
    expect(schema.properties?.metadata?.additionalProperties).toBe(false);
    expect(schema.properties?.spec?.additionalProperties).toBe(false);
  });

  it("lists the metadata and spec fields a publisher writes", () => {
    const schema = manifestJsonSchema() as ObjectSchema;
    const metadata = schema.properties?.metadata;
    const spec = schema.properties?.spec;
    expect(Object.keys(metadata?.properties ?? {})).toEqual(
      expect.arrayContaining(["name", "version", "category", "tags", "license"]),
    );
    expect(metadata?.required).toEqual(expect.arrayContaining(["name", "version", "category", "license"]));
    // Input-side schema: fields with defaults are optional for the author.
    expect(metadata?.required).not.toContain("tags");
    expect(Object.keys(spec?.properties ?? {})).toEqual(
      expect.arrayContaining([
        "description",
        "runtime",
        "entrypoint",
        "permissions",
        "dependencies",
        "pricing",
      ]),
    );
    expect(spec?.required).not.toContain("permissions");
  });

  it("is plain JSON that survives a round trip", () => {
    const schema = manifestJsonSchema();
    expect(JSON.parse(JSON.stringify(schema))).toEqual(schema);
  });

  it("describes a manifest that the zod schema accepts", () => {
    const doc = manifest({ name: "acme/sample" });
    expect(manifestSchema.safeParse(doc).success).toBe(true);
    const schema = manifestJsonSchema() as ObjectSchema;
    for (const key of Object.keys(doc)) expect(schema.properties).toHaveProperty(key);
  });
});
