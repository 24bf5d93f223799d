// ONNX Runtime's side of the inference benchmark (bench/run_infer_bench.sh runs it
// beside bench_infer on the same .onnx files), with onnxruntime-node:
//   node bench_infer_ort.js speed MODEL.onnx NAME [--tokens FILE] [--threads "1 2"]
//        [--batches "1 32 1024"] [--min-time S] [--reps N]
//   node bench_infer_ort.js mem MODEL.onnx NAME [--batch B] [--runs N] [--threads T]
// Sessions: intraOpNumThreads T, interOpNumThreads 1, executionMode 'sequential',
// graphOptimizationLevel 'all'; session.run with preallocated input tensors. Timing as
// bench_infer: warm-up, then N repetitions of as many runs as fill min-time / N
// seconds; one JSON line per cell with the median rows/s. With --tokens the dense
// input is the multi-hot rows of those ids, and a second cell per (threads, batch)
// times what a caller holding token ids must do for ORT: clear and fill the multi-hot
// rows, then run (the fill alone is timed too, as build_rows_per_s).
// --dump FILE: first writes the float outputs of one run on the first 1024 input rows
// (dense) to FILE (raw float32), for output agreement checks.
// The module is found in $KILN_ORT_NODE_MODULES, bench/node_modules or
// tests/integration/ort/node_modules.
'use strict';
const fs = require('fs');
const path = require('path');

const baselineRssKb = process.resourceUsage().maxRSS; // node alone, before ORT loads

function loadOrt() {
  const dirs = [process.env.KILN_ORT_NODE_MODULES, path.join(__dirname, 'node_modules'),
    path.join(__dirname, '..', 'tests', 'integration', 'ort', 'node_modules')].filter(Boolean);
  for (const d of dirs) {
    const p = path.join(d, 'onnxruntime-node');
    if (fs.existsSync(p)) return require(p);
  }
  throw new Error('onnxruntime-node not found: run `npm install --ignore-scripts` in tests/integration/ort');
}

const MAX_ROWS = 1024;
const now = () => Number(process.hrtime.bigint()) * 1e-9;

function readTokens(file) {
  const buf = fs.readFileSync(file);
  const rows = Number(buf.readBigInt64LE(0));
  const offsets = new Array(rows + 1);
  for (let i = 0; i <= rows; i++) offsets[i] = Number(buf.readBigInt64LE(8 + 8 * i));
  const start = 8 + 8 * (rows + 1);
  const n = offsets[rows];
  const ids = new Int32Array(n);
  for (let i = 0; i < n; i++) ids[i] = buf.readInt32LE(start + 4 * i);
  return { rows, offsets: Int32Array.from(offsets), ids };
}

// The same seeded values as bench_infer's make_dense.
function makeDense(width, tokens, nonneg) {
  const x = new Float32Array(MAX_ROWS * width);
  if (tokens) {
    fillMultiHot(x, width, tokens, MAX_ROWS);
  } else {
    let s = 12345;
    for (let i = 0; i < x.length; i++) {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      const u = Math.fround((s >>> 8) * (1 / 16777216));
      x[i] = nonneg ? u : Math.fround(2 * u - 1);
    }
  }
  return x;
}

// What a caller must do to feed token ids to a dense model: clear, then set the ones.
function fillMultiHot(x, width, t, rows) {
  x.fill(0, 0, rows * width);
  const off = t.offsets, ids = t.ids;
  for (let r = 0; r < rows; r++) {
    const base = r * width;
    for (let i = off[r], e = off[r + 1]; i < e; i++) {
      const id = ids[i];
      if (id >= 0 && id < width) x[base + id] = 1;
    }
  }
}

function median(a) {
  const s = [...a].sort((p, q) => p - q);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : 0.5 * (s[m - 1] + s[m]);
}

async function createSession(ort, model, threads) {
  return ort.InferenceSession.create(path.resolve(model), {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
  });
}

function opts(argv) {
  const o = { tokens: null, threads: '1 2', batches: '1 32 1024', minTime: 0.5, reps: 5, batch: 1024, runs: 100 };
  for (let i = 0; i + 1 < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (k === '--tokens') o.tokens = v;
    else if (k === '--threads') o.threads = v;
    else if (k === '--batches') o.batches = v;
    else if (k === '--min-time') o.minTime = Number(v);
    else if (k === '--reps') o.reps = Number(v);
    else if (k === '--batch') o.batch = Number(v);
    else if (k === '--runs') o.runs = Number(v);
    else if (k === '--dump') o.dump = v;
    else throw new Error(`unknown option ${k}`);
  }
  return o;
}

// Warm-up + calibration, then reps timed repetitions; returns [median, rates, runs].
async function timeCell(fn, batch, minTime, reps) {
  let t0 = now(), n = 0;
  while (n < 5 || now() - t0 < 0.05) { await fn(); n++; }
  const perRun = (now() - t0) / n;
  const runs = Math.floor(minTime / reps / perRun) + 1;
  const rates = [];
  for (let r = 0; r < reps; r++) {
    const a = now();
    for (let i = 0; i < runs; i++) await fn();
    rates.push((runs * batch) / (now() - a));
  }
  return [median(rates), rates, runs];
}

function sum(data) { let s = 0; for (let i = 0; i < data.length; i++) s += data[i]; return s; }

async function speed(model, name, o) {
  const ort = loadOrt();
  const tokens = o.tokens ? readTokens(o.tokens) : null;
  const threadsList = o.threads.split(/[ ,]+/).filter(Boolean).map(Number);
  const batches = o.batches.split(/[ ,]+/).filter(Boolean).map(Number);
  for (const threads of threadsList) {
    const session = await createSession(ort, model, threads);
    const inName = session.inputNames[0], outName = session.outputNames[0];
    // Width from a probe: the model's input is [batch, width].
    const meta = session.inputMetadata ? session.inputMetadata[0] : null;
    let width = meta && meta.shape ? Number(meta.shape[1]) : NaN;
    if (!(width > 0)) width = Number(process.env.KILN_BENCH_WIDTH);
    const x = makeDense(width, tokens, name.includes('fashion'));
    if (o.dump && threads === threadsList[0]) {
      const r = await session.run({ [inName]: new ort.Tensor('float32', x, [MAX_ROWS, width]) });
      const d = r[outName].data;
      fs.writeFileSync(o.dump, Buffer.from(d.buffer, d.byteOffset, d.byteLength));
    }
    for (const batch of batches) {
      for (let p = 0; p < (tokens ? 2 : 1); p++) {
        // Preallocated: one tensor per cell over its own buffer.
        const buf = new Float32Array(batch * width);
        buf.set(x.subarray(0, batch * width));
        const feeds = { [inName]: new ort.Tensor('float32', buf, [batch, width]) };
        let last = null;
        const run = p === 0
          ? async () => { last = await session.run(feeds); }
          : async () => { fillMultiHot(buf, width, tokens, batch); last = await session.run(feeds); };
        const [med, rates, runs] = await timeCell(run, batch, o.minTime, o.reps);
        const line = { side: 'ort', model: name, path: p ? 'tokens' : 'dense', threads, batch,
          rows_per_s: med, runs_per_rep: runs, reps: rates, checksum: sum(last[outName].data) };
        if (p) {
          const [bmed] = await timeCell(async () => fillMultiHot(buf, width, tokens, batch), batch, o.minTime / 2, o.reps);
          line.build_rows_per_s = bmed;
        }
        console.log(JSON.stringify(line));
      }
    }
    await session.release();
  }
}

async function mem(model, name, o) {
  const ort = loadOrt();
  const threads = Number(o.threads.split(/[ ,]+/)[0]);
  const session = await createSession(ort, model, threads);
  const meta = session.inputMetadata ? session.inputMetadata[0] : null;
  const width = Number(meta.shape[1]);
  const x = makeDense(width, null, true).subarray(0, o.batch * width);
  const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, [o.batch, width]) };
  for (let i = 0; i < o.runs; i++) await session.run(feeds);
  console.log(JSON.stringify({ side: 'ort', model: name, mem: 1, batch: o.batch, runs: o.runs,
    maxrss_kb: process.resourceUsage().maxRSS, node_baseline_kb: baselineRssKb }));
}

async function main() {
  const [mode, model, name, ...rest] = process.argv.slice(2);
  if (!mode || !model || !name) {
    console.error('usage: node bench_infer_ort.js speed|mem MODEL.onnx NAME [options]');
    process.exit(2);
  }
  const o = opts(rest);
  if (mode === 'speed') await speed(model, name, o);
  else if (mode === 'mem') await mem(model, name, o);
  else throw new Error(`unknown mode ${mode}`);
}

main().catch((e) => {
  console.error(`bench_infer_ort.js: ${e && e.stack ? e.stack : e}`);
  process.exit(2);
});
