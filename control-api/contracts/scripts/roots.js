// Reference roots from @openzeppelin/merkle-tree, for the Rust cross-check
// test. stdin: JSON [[["0xaddr", "amount"], ...], ...] (a list of leaf sets);
// stdout: JSON ["0xroot", ...], one root per set.
"use strict";
const { StandardMerkleTree } = require("@openzeppelin/merkle-tree");

let input = "";
process.stdin.on("data", (d) => (input += d));
process.stdin.on("end", () => {
  const sets = JSON.parse(input);
  const roots = sets.map((leaves) => StandardMerkleTree.of(leaves, ["address", "uint256"]).root);
  process.stdout.write(JSON.stringify(roots) + "\n");
});
