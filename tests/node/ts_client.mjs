// A real TypeScript-SDK MCP client for the end-to-end tests: connects to a
// Streamable HTTP endpoint, runs the calls given as JSON on argv[3], and
// prints one JSON line per call with what the client saw.
//
//   node ts_client.mjs URL '[{"tool":"echo","arguments":{"text":"hi"}}]' [BEARER_TOKEN]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, callsJson, token] = process.argv.slice(2);
const headers = token ? { Authorization: `Bearer ${token}` } : {};
const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
const client = new Client({ name: "toolgate-e2e-ts", version: "0" });
await client.connect(transport);
const tools = await client.listTools();
console.log(JSON.stringify({ tools: tools.tools.map((t) => t.name), protocolVersion: transport.protocolVersion ?? null }));
for (const call of JSON.parse(callsJson)) {
  try {
    const result = await client.callTool({ name: call.tool, arguments: call.arguments });
    console.log(JSON.stringify({ tool: call.tool, result }));
  } catch (e) {
    console.log(JSON.stringify({ tool: call.tool, error: { code: e.code ?? null, message: String(e.message) } }));
  }
}
await transport.terminateSession().catch(() => {});
await client.close();
