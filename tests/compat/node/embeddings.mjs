// The official Node SDK asks for base64 embeddings by default and decodes them to floats; the
// mock behind Laneway must answer so that they decode to vectors of the right length.
// Usage: LANEWAY_URL=http://host:port/v1 KEY=... node embeddings.mjs
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.LANEWAY_URL, apiKey: process.env.KEY });
const r = await client.embeddings.create({ model: "mock-embed", input: ["a", "b"], dimensions: 16 });
const [a, b] = r.data.map((d) => d.embedding);
const ok =
  a.length === 16 &&
  b.length === 16 &&
  a.every((x) => Number.isFinite(x) && Math.abs(x) <= 1) &&
  a.some((x, i) => x !== b[i]) &&
  Math.abs(Math.hypot(...a) - 1) < 1e-3;
if (!ok) {
  console.error("unexpected:", JSON.stringify(r.data));
  process.exit(1);
}
console.log(`ok: ${r.data.length} vectors of ${a.length}`);
