// swarm-coordinator's OpenAI-compatible HTTP API driven by the official `openai` npm client, on
// a live local cluster of stories260K (2 swarm-workers + a coordinator with --http-listen, as
// processes on loopback). Checks: /v1/models and /health; greedy completions, streamed and not,
// whose token ids equal `swarm generate`'s (gRPC) and the golden ids; a stop string that spans
// two tokens (never emitted, finish_reason "stop", the same text as `swarm generate --stop`);
// logprobs against the in-process engine (`swarm run --logprobs`); usage, also as the stream's
// last chunk; every error case with its HTTP code and OpenAI's error shape (400, 404, 413, 429,
// 503); chat through the model's template (llama-2-chat's, which openai_test.sh gives the
// stories260K directory it serves): the prompt ids are `swarm chat-template`'s rendering tokenized,
// the reply equals `swarm generate` on them, streamed and not, and the template's own
// raise_exception is a 400 with its message; and a client that disconnects mid-stream
// cancels its request and frees its worker sessions.
//
// Run by openai_test.sh (which installs the npm package from the lock file) with SWARM,
// SWARM_WORKER, SWARM_COORDINATOR, MODEL and GOLDEN in the environment.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { promisify } from 'node:util';
import OpenAI from 'openai';

const run = promisify(execFile);
const { SWARM, SWARM_WORKER, SWARM_COORDINATOR, MODEL, GOLDEN } = process.env;
const MODEL_NAME = 'stories260K';
const CONTEXT = JSON.parse(readFileSync(`${MODEL}/config.json`, 'utf8')).max_position_embeddings;

const procs = [];
let coord; // gRPC address
let http; // HTTP address
let coordLog = () => '';
let client;

// Starts a server; resolves with the lines it printed once `want` (regexps) all matched.
function start(name, bin, args, want) {
  return new Promise((resolve, reject) => {
    const p = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(p);
    let out = '';
    let err = '';
    p.stdout.on('data', (d) => {
      out += d;
      const m = want.map((re) => out.match(re));
      if (m.every(Boolean)) resolve({ matches: m.map((x) => x[1]), log: () => err });
    });
    p.stderr.on('data', (d) => {
      err += d;
    });
    p.on('error', (e) => reject(new Error(`${name}: ${e.message}`)));
    p.on('exit', (code) => reject(new Error(`${name} exited ${code}: ${out}${err}`)));
  });
}

async function waitHealthy(address, timeoutMs = 30000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const r = await fetch(`http://${address}/health`);
      if (r.status === 200) return;
    } catch {}
    if (Date.now() > end) throw new Error(`${address} not healthy after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

// The int64 tensors of a safetensors file.
function readInt64Tensors(path) {
  const buf = readFileSync(path);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const out = {};
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__' || t.dtype !== 'I64') continue;
    const [b, e] = t.data_offsets;
    const ids = [];
    for (let o = 8 + n + b; o < 8 + n + e; o += 8) ids.push(Number(buf.readBigInt64LE(o)));
    out[name] = ids;
  }
  return out;
}

async function swarmJson(...args) {
  const { stdout } = await run(SWARM, args, { maxBuffer: 1 << 24 });
  return JSON.parse(stdout);
}

// An API error's status and OpenAI error object, from the client's exception.
async function apiError(promise) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIError, `not an APIError: ${e}`);
    return e;
  }
  assert.fail('the request succeeded');
}

function assertErrorShape(body, { type, param, code }) {
  assert.ok(body && typeof body.error === 'object', JSON.stringify(body));
  const e = body.error;
  assert.equal(typeof e.message, 'string');
  assert.ok(e.message.length > 0);
  if (type !== undefined) assert.equal(e.type, type);
  assert.ok('param' in e && 'code' in e, JSON.stringify(e));
  if (param !== undefined) assert.equal(e.param, param);
  if (code !== undefined) assert.equal(e.code, code);
}

async function rawPost(path, body, headers = { 'content-type': 'application/json' }) {
  const r = await fetch(`http://${http}${path}`, { method: 'POST', body, headers });
  return { status: r.status, body: await r.json() };
}

before(async () => {
  const worker = (layers) =>
    start(`worker ${layers}`, SWARM_WORKER,
      ['--model', MODEL, '--layers', layers, '--listen', '127.0.0.1:0', '--threads', '1'],
      [/^listening on (\S+)$/m]);
  const [a, b] = await Promise.all([worker('0-2'), worker('3-4')]);
  // Two generating and one queued: the fourth concurrent request is refused (429).
  const c = await start('coordinator', SWARM_COORDINATOR,
    ['--model', MODEL, '--workers', `${a.matches[0]},${b.matches[0]}`, '--listen', '127.0.0.1:0',
      '--http-listen', '127.0.0.1:0', '--max-concurrent-requests', '2',
      '--max-queued-requests', '1', '--http-max-body-bytes', '65536'],
    [/^listening on (\S+)$/m, /^http api on http:\/\/(\S+)\/v1$/m]);
  [coord, http] = c.matches;
  coordLog = c.log;
  await waitHealthy(http);
  client = new OpenAI({ baseURL: `http://${http}/v1`, apiKey: 'unused', maxRetries: 0 });
});

after(() => {
  for (const p of procs) p.kill('SIGTERM');
});

const golden = () => readInt64Tensors(`${GOLDEN}/golden.safetensors`);

test('models and health', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [MODEL_NAME]);
  assert.equal(models.data[0].object, 'model');
  const one = await client.models.retrieve(MODEL_NAME);
  assert.equal(one.id, MODEL_NAME);
  const e = await apiError(client.models.retrieve('no-such-model'));
  assert.equal(e.status, 404);
  const h = await fetch(`http://${http}/health`);
  assert.equal(h.status, 200);
});

test('greedy completion: ids equal swarm generate and the golden ids', async () => {
  const g = golden();
  const prompt = g['greedy.input_ids'];
  const want = g['greedy.greedy'];
  assert.ok(prompt && want, 'golden greedy ids');
  const r = await client.completions.create({
    model: MODEL_NAME, prompt, max_tokens: want.length, temperature: 0, ignore_eos: true,
    return_token_ids: true,
  });
  const c = r.choices[0];
  assert.deepEqual(c.token_ids, want);
  assert.deepEqual(r.prompt_token_ids, prompt);
  assert.equal(c.finish_reason, 'length');
  assert.equal(r.object, 'text_completion');
  assert.match(r.id, /^cmpl-/);
  assert.deepEqual(r.usage, {
    prompt_tokens: prompt.length, completion_tokens: want.length,
    total_tokens: prompt.length + want.length,
  });
  const cli = await swarmJson('generate', '--server', coord, '--ids', prompt.join(','),
    '--max-new-tokens', String(want.length), '--no-stop', '--json');
  assert.deepEqual(cli.ids, c.token_ids);
  assert.equal(cli.text, c.text);
});

test('text prompt, streamed and not: same text and ids; usage as the last chunk', async () => {
  const req = { model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 24, temperature: 0,
    return_token_ids: true };
  const full = await client.completions.create(req);
  const cli = await swarmJson('generate', '--server', coord, '--prompt', 'Once upon a time',
    '--max-new-tokens', '24', '--json');
  assert.deepEqual(full.choices[0].token_ids, cli.ids);
  assert.equal(full.choices[0].text, cli.text);

  const stream = await client.completions.create({ ...req, stream: true,
    stream_options: { include_usage: true } });
  let text = '';
  const ids = [];
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, full.usage);
  for (const chunk of chunks.slice(0, -1)) {
    assert.equal(chunk.usage, null);
    assert.equal(chunk.object, 'text_completion');
    text += chunk.choices[0].text;
    ids.push(...(chunk.choices[0].token_ids ?? []));
  }
  assert.equal(chunks.at(-2).choices[0].finish_reason, full.choices[0].finish_reason);
  for (const chunk of chunks.slice(0, -2)) assert.equal(chunk.choices[0].finish_reason, null);
  assert.equal(text, full.choices[0].text);
  assert.deepEqual(ids, full.choices[0].token_ids);

  // Without include_usage there is no usage chunk (and no usage field).
  const plain = await client.completions.create({ ...req, stream: true });
  const plainChunks = [];
  for await (const chunk of plain) plainChunks.push(chunk);
  assert.ok(plainChunks.every((c) => c.choices.length === 1 && !('usage' in c)));
});

test('logprobs equal the in-process engine, top alternatives in order', async () => {
  const r = await client.completions.create({
    model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, logprobs: 3,
    ignore_eos: true, return_token_ids: true,
  });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 12);
  assert.equal(lp.token_logprobs.length, 12);
  assert.equal(lp.top_logprobs.length, 12);
  const engine = await swarmJson('run', '--model', MODEL, '--prompt', 'Once upon a time',
    '--max-new-tokens', '12', '--no-stop', '--logprobs', '3', '--json');
  assert.deepEqual(engine.ids, r.choices[0].token_ids);
  let offset = 0;
  for (let i = 0; i < 12; ++i) {
    assert.ok(Math.abs(lp.token_logprobs[i] - engine.logprobs[i].logprob) < 1e-5,
      `token ${i}: ${lp.token_logprobs[i]} vs ${engine.logprobs[i].logprob}`);
    assert.equal(lp.tokens[i], engine.logprobs[i].text);
    const top = Object.values(lp.top_logprobs[i]);
    assert.ok(top.length >= 1 && top.length <= 3);
    // Greedy: the chosen token is the most likely one.
    assert.ok(Math.abs(Math.max(...top) - lp.token_logprobs[i]) < 1e-6);
    assert.ok(lp.token_logprobs[i] <= 0);
    assert.equal(lp.text_offset[i], offset);
    offset += lp.tokens[i].length;
  }
  // Streamed: the same numbers, one token per chunk.
  const stream = await client.completions.create({
    model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 12, temperature: 0, logprobs: 3,
    ignore_eos: true, stream: true,
  });
  const streamed = [];
  for await (const chunk of stream) {
    const l = chunk.choices[0].logprobs;
    if (l) streamed.push(...l.token_logprobs);
  }
  assert.deepEqual(streamed, lp.token_logprobs);
  // Out of range.
  const e = await apiError(client.completions.create({ model: MODEL_NAME, prompt: 'x',
    max_tokens: 2, logprobs: 21 }));
  assert.equal(e.status, 400);
  assertErrorShape({ error: e.error }, { type: 'invalid_request_error', param: 'logprobs' });
});

test('a stop string spanning two tokens ends generation and is never emitted', async () => {
  const base = { model: MODEL_NAME, prompt: 'Once upon a time', max_tokens: 40, temperature: 0,
    ignore_eos: true, logprobs: 0 };
  const full = await client.completions.create(base);
  const tokens = full.choices[0].logprobs.tokens;
  const text = full.choices[0].text;
  assert.equal(tokens.join(''), text);
  // The last two characters of one token and the first two of the next, whose first occurrence
  // in the text spans a token boundary.
  const boundaries = [];
  for (let i = 0, b = 0; i < tokens.length; ++i) boundaries.push((b += tokens[i].length));
  const spans = (at, len) => boundaries.some((b) => at < b && at + len > b);
  let stop = null;
  let at = -1;
  for (let i = 3; i + 1 < tokens.length && stop === null; ++i) {
    if (tokens[i].length < 2 || tokens[i + 1].length < 2) continue;
    const s = tokens[i].slice(-2) + tokens[i + 1].slice(0, 2);
    if (spans(text.indexOf(s), s.length)) [stop, at] = [s, text.indexOf(s)];
  }
  assert.ok(stop, `no stop string spanning two tokens in ${JSON.stringify(tokens)}`);

  const r = await client.completions.create({ ...base, stop: [stop, 'zzz-never'] });
  assert.equal(r.choices[0].text, text.slice(0, at));
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.ok(!r.choices[0].text.includes(stop));

  const stream = await client.completions.create({ ...base, stop, stream: true });
  let streamed = '';
  let finish = null;
  for await (const chunk of stream) {
    streamed += chunk.choices[0].text;
    finish = chunk.choices[0].finish_reason ?? finish;
  }
  assert.equal(streamed, text.slice(0, at));
  assert.equal(finish, 'stop');

  // The gRPC path (SDK + CLI) stops the same way.
  const cli = await swarmJson('generate', '--server', coord, '--prompt', 'Once upon a time',
    '--max-new-tokens', '40', '--no-stop', '--stop', 'zzz-never', '--stop', stop, '--json');
  assert.equal(cli.text, text.slice(0, at));
  assert.equal(cli.finish_reason, 'stop');
});

// The ids of `text` as `swarm tokenize --no-special` gives them (special tokens written in the
// text, such as the template's <s>, are still recognised).
function tokenize(text) {
  const r = spawnSync(SWARM, ['tokenize', '--tokenizer', MODEL, '--no-special'],
    { input: JSON.stringify(text) + '\n', encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout.trim());
}

test('chat completions: the model\'s template; ids equal swarm generate on its rendering', async () => {
  const messages = [
    { role: 'system', content: 'You tell short stories.' },
    { role: 'user', content: 'Tell me about Lily.' },
  ];
  const dir = mkdtempSync(`${tmpdir()}/swarm-chat-`);
  writeFileSync(`${dir}/messages.json`, JSON.stringify(messages));
  const rendered = await swarmJson('chat-template', '--tokenizer-config',
    `${MODEL}/tokenizer_config.json`, '--messages', `${dir}/messages.json`,
    '--add-generation-prompt');
  assert.match(rendered, /\[INST\]/);
  const ids = tokenize(rendered);
  const req = { model: MODEL_NAME, messages, max_tokens: 12, temperature: 0, ignore_eos: true,
    return_token_ids: true };
  const r = await client.chat.completions.create(req);
  assert.equal(r.object, 'chat.completion');
  assert.deepEqual(r.prompt_token_ids, ids);
  const c = r.choices[0];
  assert.equal(c.message.role, 'assistant');
  assert.equal(c.finish_reason, 'length');
  const cli = await swarmJson('generate', '--server', coord, '--ids', ids.join(','),
    '--max-new-tokens', '12', '--no-stop', '--json');
  assert.equal(c.message.content, cli.text);
  assert.deepEqual(r.usage, { prompt_tokens: ids.length, completion_tokens: 12,
    total_tokens: ids.length + 12 });

  let streamed = '';
  const stream = await client.chat.completions.create({ ...req, stream: true });
  for await (const chunk of stream) streamed += chunk.choices[0]?.delta?.content ?? '';
  assert.equal(streamed, cli.text);

  // llama-2-chat raises when the roles do not alternate: a 400 carrying the template's message.
  for (const s of [false, true]) {
    const e = await apiError(client.chat.completions.create({
      model: MODEL_NAME, stream: s,
      messages: [{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }],
    }));
    assert.equal(e.status, 400);
    assertErrorShape({ error: e.error }, { type: 'invalid_request_error', param: 'messages' });
    assert.match(e.error.message, /alternate/);
  }
  const bad = await rawPost('/v1/chat/completions', JSON.stringify({ model: MODEL_NAME }));
  assert.equal(bad.status, 400);
  assertErrorShape(bad.body, { param: 'messages' });
});

test('errors: codes and OpenAI error shape', async () => {
  const cases = [
    [{ prompt: 'x', n: 2 }, 400, 'n'],
    [{ prompt: 'x', temperature: 5 }, 400, 'temperature'],
    [{ prompt: 'x', top_p: 0 }, 400, 'top_p'],
    [{ prompt: 'x', max_tokens: 0 }, 400, 'max_tokens'],
    [{ prompt: 'x', stop: [''] }, 400, 'stop'],
    [{ prompt: 'x', stop: 7 }, 400, 'stop'],
    [{ prompt: 'x', mode: 'nonsense' }, 400, 'mode'],
    [{ prompt: 'x', presence_penalty: 1 }, 400, 'presence_penalty'],
    [{ prompt: [[1, 2], [3]] }, 400, 'prompt'],
    [{}, 400, 'prompt'],
    [{ prompt: [1, 999999] }, 400, undefined],
    [{ prompt: 'x', mode: 'sparse', top_k_blocks: 2 }, 400, undefined],
  ];
  for (const [body, status, param] of cases) {
    const e = await apiError(client.completions.create({ model: MODEL_NAME, max_tokens: 2,
      ...body }));
    assert.equal(e.status, status, JSON.stringify(body));
    assertErrorShape({ error: e.error }, { type: 'invalid_request_error', param });
  }
  // Beyond the context.
  const long = Array(CONTEXT + 1).fill(1);
  const ctx = await apiError(client.completions.create({ model: MODEL_NAME, prompt: long,
    max_tokens: 1 }));
  assert.equal(ctx.status, 400);
  assert.equal(ctx.error.code, 'context_length_exceeded');
  const ctx2 = await apiError(client.completions.create({ model: MODEL_NAME, prompt: [1, 2],
    max_tokens: CONTEXT }));
  assert.equal(ctx2.error.code, 'context_length_exceeded');
  // Another model.
  const nf = await apiError(client.completions.create({ model: 'gpt-4', prompt: 'x' }));
  assert.equal(nf.status, 404);
  assertErrorShape({ error: nf.error }, { param: 'model', code: 'model_not_found' });
  // Not JSON; not an object.
  for (const body of ['{', '[1]']) {
    const r = await rawPost('/v1/completions', body);
    assert.equal(r.status, 400);
    assertErrorShape(r.body, { type: 'invalid_request_error' });
  }
  // Unknown path and method.
  const unknown = await fetch(`http://${http}/v1/embeddings`, { method: 'POST', body: '{}' });
  assert.equal(unknown.status, 404);
  assertErrorShape(await unknown.json(), {});
  // Over the body cap (65536 bytes here).
  const big = await rawPost('/v1/completions',
    JSON.stringify({ model: MODEL_NAME, prompt: 'x'.repeat(70000) }));
  assert.equal(big.status, 413);
  assertErrorShape(big.body, { code: 'request_too_large' });
});

// Opens a long stream and returns it with its first chunk read.
async function openLong(max_tokens = CONTEXT - 8) {
  const stream = await client.completions.create({ model: MODEL_NAME, prompt: 'Once upon a time',
    max_tokens, temperature: 0, ignore_eos: true, stream: true });
  const it = stream[Symbol.asyncIterator]();
  const first = await it.next();
  return { stream, it, first: first.value };
}

async function status() {
  return swarmJson('status', '--server', coord, '--json');
}

async function waitIdle(timeoutMs = 20000) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const s = await status();
    const sessions = s.workers.reduce((n, w) => n + w.sessions, 0);
    if (s.active_requests === 0 && sessions === 0) return s;
    if (Date.now() > end) throw new Error(`not idle: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test('a client that disconnects mid-stream cancels the request and frees its sessions', async () => {
  await waitIdle();
  const max = CONTEXT - 8;
  const { stream, it, first } = await openLong(max);
  const id = first.id.replace(/^cmpl-/, '');
  for (let i = 0; i < 3; ++i) await it.next();
  stream.controller.abort();
  await waitIdle();
  // The coordinator logged the request as cancelled before its last token.
  const end = Date.now() + 10000;
  let line;
  while (!(line = coordLog().split('\n').find((l) => l.includes(`request '${id}'`)))) {
    if (Date.now() > end) assert.fail(`no log line for ${id}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(line, /CANCELLED/);
  const generated = Number(line.match(/(\d+) generated/)[1]);
  assert.ok(generated < max, line);
});

test('429 when the request pool is full, with the error shape', async () => {
  await waitIdle();
  // Two generating (max-concurrent-requests 2)...
  const a = await openLong();
  const b = await openLong();
  // ...one queued (max-queued-requests 1): its stream starts only when a slot frees up.
  const queued = client.completions.create({ model: MODEL_NAME, prompt: 'x', max_tokens: 1,
    stream: true });
  queued.catch(() => {});
  await new Promise((r) => setTimeout(r, 50));
  const e = await apiError(client.completions.create({ model: MODEL_NAME, prompt: 'x',
    max_tokens: 1 }));
  assert.equal(e.status, 429);
  assertErrorShape({ error: e.error }, { type: 'rate_limit_error', code: 'rate_limit_exceeded' });
  a.stream.controller.abort();
  b.stream.controller.abort();
  const q = await queued;
  for await (const _ of q) {
  }
  await waitIdle();
});

test('503 while the coordinator is not serving', async () => {
  // A coordinator whose only worker does not exist.
  const c = await start('lonely coordinator', SWARM_COORDINATOR,
    ['--model', MODEL, '--workers', '127.0.0.1:9', '--listen', '127.0.0.1:0',
      '--http-listen', '127.0.0.1:0'],
    [/^listening on (\S+)$/m, /^http api on http:\/\/(\S+)\/v1$/m]);
  const address = c.matches[1];
  const h = await fetch(`http://${address}/health`);
  assert.equal(h.status, 503);
  assertErrorShape(await h.json(), {});
  const lonely = new OpenAI({ baseURL: `http://${address}/v1`, apiKey: 'unused', maxRetries: 0 });
  const e = await apiError(lonely.completions.create({ model: MODEL_NAME, prompt: 'x',
    max_tokens: 2 }));
  assert.equal(e.status, 503);
  assertErrorShape({ error: e.error }, { type: 'service_unavailable_error' });
});
