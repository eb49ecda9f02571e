// Streams that wait in a Laneway queue carry `: queued ...` comments before their chunks; the
// official Node SDK must read them cleanly. Usage: LANEWAY_URL=http://host:port/v1 KEY=... node queued_streams.mjs
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.LANEWAY_URL, apiKey: process.env.KEY });

async function one(i) {
  const { data: stream, response } = await client.chat.completions
    .create({ model: "queue-1", messages: [{ role: "user", content: `wait ${i}` }], stream: true })
    .withResponse();
  const waited = !response.headers.get("x-laneway-lane");
  let text = "";
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? "";
  return { waited, text };
}

const results = await Promise.all([0, 1, 2, 3].map(one));
const waited = results.filter((r) => r.waited).length;
if (results.some((r) => !r.text) || waited < 2) {
  console.error("unexpected:", JSON.stringify(results));
  process.exit(1);
}
console.log(`ok: ${results.length} streams, ${waited} waited in the queue`);
