// The official Node SDK's Responses API through Laneway.
// Usage: LANEWAY_URL=http://host:port/v1 KEY=... node responses.mjs
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.LANEWAY_URL, apiKey: process.env.KEY, maxRetries: 0 });
const first = await client.responses.create({ model: "pool-1", input: "Write a haiku" });
const second = await client.responses.create({
  model: "pool-1",
  input: "Another",
  previous_response_id: first.id,
});
if (!first.id.startsWith("resp_") || !first.output_text.trim().startsWith("Laneway") || second.previous_response_id !== first.id) {
  console.error("unexpected:", JSON.stringify({ first, second }));
  process.exit(1);
}
console.log(`ok: ${first.id} then ${second.id}`);
