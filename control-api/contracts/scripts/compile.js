// Compiles src/*.sol with the solc pinned in package-lock.json.
//   node scripts/compile.js build   writes build/<Contract>.bin and .abi
//   node scripts/compile.js check   compiles into a temp dir and fails if the
//                                   committed build/ differs (CI)
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const solc = require("solc");

const ROOT = path.resolve(__dirname, "..");
const CONTRACTS = ["WeToken", "SettlementDistributor"];
// Fixed so the bytecode, and with it the committed files, only change when
// the sources or the pinned compiler do. cancun: every current L1/L2 and
// revm/anvil accept it.
const SETTINGS = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: "cancun",
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object"] } },
};

function findImport(p) {
  for (const base of [path.join(ROOT, "node_modules"), ROOT]) {
    const file = path.join(base, p);
    if (fs.existsSync(file)) return { contents: fs.readFileSync(file, "utf8") };
  }
  return { error: `not found: ${p}` };
}

function compile(outDir) {
  const sources = {};
  for (const name of CONTRACTS) {
    const rel = `src/${name}.sol`;
    sources[rel] = { content: fs.readFileSync(path.join(ROOT, rel), "utf8") };
  }
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) console.error(e.formattedMessage);
  if (errors.length > 0) process.exit(1);
  fs.mkdirSync(outDir, { recursive: true });
  for (const name of CONTRACTS) {
    const c = output.contracts[`src/${name}.sol`][name];
    fs.writeFileSync(path.join(outDir, `${name}.bin`), c.evm.bytecode.object + "\n");
    fs.writeFileSync(path.join(outDir, `${name}.abi`), JSON.stringify(c.abi, null, 2) + "\n");
  }
}

const mode = process.argv[2] || "build";
console.error(`solc ${solc.version()}`);
if (mode === "build") {
  compile(path.join(ROOT, "build"));
} else if (mode === "check") {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "westream-contracts-"));
  try {
    compile(tmp);
    let differ = false;
    for (const name of CONTRACTS) {
      for (const ext of ["bin", "abi"]) {
        const file = `${name}.${ext}`;
        const committed = path.join(ROOT, "build", file);
        const fresh = fs.readFileSync(path.join(tmp, file), "utf8");
        if (!fs.existsSync(committed) || fs.readFileSync(committed, "utf8") !== fresh) {
          console.error(`build/${file} differs from a fresh compile: run \`npm run build\` and commit`);
          differ = true;
        }
      }
    }
    if (differ) process.exit(1);
    console.error("build/ matches a fresh compile");
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
} else {
  console.error(`usage: compile.js build|check`);
  process.exit(2);
}
