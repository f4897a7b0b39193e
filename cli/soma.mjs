#!/usr/bin/env node
// The CLI is TypeScript run through Node's built-in type stripping, available from Node 22.18.
if (!process.features.typescript) {
  console.error(
    `soma needs Node.js 22.18 or newer (this is ${process.version}); in the repository, run it as "npx soma", ` +
      "which uses the Node from devDependencies.",
  );
  process.exit(1);
}
const { main } = await import("./main.ts");
const { processIo } = await import("./output.ts");
process.exitCode = await main(process.argv.slice(2), { io: processIo, env: process.env, cwd: process.cwd() });
