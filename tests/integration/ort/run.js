// Runs an ONNX model with ONNX Runtime (onnxruntime-node) for kiln's cross-check:
//   node run.js MODEL.onnx INPUT.npy OUTPUT.npy
// INPUT.npy: a 2-D float32 array (C order, little-endian) fed to the model's first
// input; OUTPUT.npy: the first output, float32.
//   node run.js MODEL.onnx --input NAME=X.npy ... --output NAME=Y.npy ...
// several inputs and outputs by graph name (every graph input must be given; the
// outputs named are written). Exit 0 ok, 2 on any error.
// KILN_ORT_OPTIMIZED=FILE also saves the graph ORT runs after its optimizations
// (optimizedModelFilePath), to check which nodes it fused.
'use strict';
const fs = require('fs');
const path = require('path');

function readNpy(file) {
  const buf = fs.readFileSync(file);
  if (buf.toString('latin1', 1, 6) !== 'NUMPY') throw new Error(`${file}: not a .npy file`);
  const major = buf[6];
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = (major === 1 ? 10 : 12) + headerLen;
  const header = buf.toString('latin1', major === 1 ? 10 : 12, start);
  if (!/'descr':\s*'<f4'/.test(header)) throw new Error(`${file}: expected float32 ('<f4'), got ${header}`);
  if (/'fortran_order':\s*True/.test(header)) throw new Error(`${file}: Fortran order is not supported`);
  const shape = header.match(/'shape':\s*\(([^)]*)\)/)[1].split(',').map((s) => s.trim())
    .filter((s) => s.length).map(Number);
  const count = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(count);
  for (let i = 0; i < count; i++) data[i] = buf.readFloatLE(start + 4 * i);
  return { shape, data };
}

function writeNpy(file, shape, data) {
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1;
  head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  const body = Buffer.alloc(4 * data.length);
  for (let i = 0; i < data.length; i++) body.writeFloatLE(data[i], 4 * i);
  const tmp = `${file}.tmp${process.pid}`;
  fs.writeFileSync(tmp, Buffer.concat([head, Buffer.from(header, 'latin1'), body]));
  fs.renameSync(tmp, file);
}

function parseNamed(args) {
  const inputs = [];
  const outputs = [];
  for (let i = 0; i < args.length; i += 2) {
    const flag = args[i];
    const v = args[i + 1];
    const eq = v ? v.indexOf('=') : -1;
    if ((flag !== '--input' && flag !== '--output') || eq <= 0) {
      throw new Error(`expected --input NAME=FILE or --output NAME=FILE, got "${flag} ${v || ''}"`);
    }
    (flag === '--input' ? inputs : outputs).push([v.slice(0, eq), v.slice(eq + 1)]);
  }
  return { inputs, outputs };
}

async function runNamed(ort, session, args) {
  const { inputs, outputs } = parseNamed(args);
  const feeds = {};
  for (const [name, file] of inputs) {
    if (!session.inputNames.includes(name)) {
      throw new Error(`no input "${name}" (inputs: ${session.inputNames.join(', ')})`);
    }
    const x = readNpy(file);
    feeds[name] = new ort.Tensor('float32', x.data, x.shape);
  }
  for (const name of session.inputNames) {
    if (!feeds[name]) throw new Error(`input "${name}" is not given`);
  }
  const results = await session.run(feeds);
  for (const [name, file] of outputs) {
    const y = results[name];
    if (!y) throw new Error(`no output "${name}" (outputs: ${session.outputNames.join(', ')})`);
    writeNpy(file, y.dims.map(Number), y.data);
  }
}

async function main() {
  const [model, input, output] = process.argv.slice(2);
  if (!model || !input || !output) {
    console.error('usage: node run.js MODEL.onnx INPUT.npy OUTPUT.npy\n' +
                  '       node run.js MODEL.onnx --input NAME=X.npy ... --output NAME=Y.npy ...');
    process.exit(2);
  }
  const ort = require('onnxruntime-node');
  const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 1 };
  if (process.env.KILN_ORT_OPTIMIZED) opts.optimizedModelFilePath = path.resolve(process.env.KILN_ORT_OPTIMIZED);
  const session = await ort.InferenceSession.create(path.resolve(model), opts);
  if (input.startsWith('--')) {
    await runNamed(ort, session, process.argv.slice(3));
    return;
  }
  const x = readNpy(input);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x.data, x.shape) };
  const results = await session.run(feeds);
  const y = results[session.outputNames[0]];
  writeNpy(output, y.dims.map(Number), y.data);
}

main().catch((e) => {
  console.error(`run.js: ${e && e.message ? e.message : e}`);
  process.exit(2);
});
