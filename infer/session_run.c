/* kiln runtime — kiln_session_run and kiln_session_run_tokens: check the inputs
 * against the plan, then execute the steps over the preplanned arena (no heap). */
#include <stdio.h>
#include <string.h>

#include "session_internal.h"

static void exec_step(kiln_session *s, const kiln_step *st, int64_t batch) {
  switch (st->op) {
    case KILN_OP_GEMM: kiln_exec_gemm(s, st, batch); break;
    case KILN_OP_ADD:
    case KILN_OP_SUB:
    case KILN_OP_MUL:
    case KILN_OP_DIV: kiln_exec_binary(s, st, batch); break;
    case KILN_OP_RELU:
    case KILN_OP_LEAKY_RELU:
    case KILN_OP_SIGMOID:
    case KILN_OP_TANH: kiln_exec_unary(s, st, batch); break;
    case KILN_OP_SOFTMAX:
    case KILN_OP_LOG_SOFTMAX: kiln_exec_softmax(s, st, batch); break;
    case KILN_OP_CONCAT: kiln_exec_concat(s, st, batch); break;
    case KILN_OP_COPY: kiln_exec_copy(s, st, batch); break;
    case KILN_OP_CAST: kiln_exec_cast(s, st, batch); break;
    case KILN_OP_FILL_ONES: kiln_exec_fill_ones(s, st, batch); break;
    case KILN_OP_QUANTIZE: kiln_exec_quantize(s, st, batch); break;
    case KILN_OP_DEQUANTIZE: kiln_exec_dequantize(s, st, batch); break;
    case KILN_OP_DYNQUANT: kiln_exec_dynquant(s, st, batch); break;
    case KILN_OP_MATMUL_INTEGER: kiln_exec_matmul_integer(s, st, batch); break;
    case KILN_OP_QLINEAR_MATMUL: kiln_exec_qlinear_matmul(s, st, batch); break;
    case KILN_OP_QGEMM: kiln_exec_qgemm(s, st, batch); break;
    case KILN_OP_SQRT:
    case KILN_OP_RECIPROCAL: kiln_exec_math_unary(s, st, batch); break;
    case KILN_OP_REDUCE_MEAN: kiln_exec_reduce_mean(s, st, batch); break;
  }
}

/* Steps [begin, end) in order; consecutive int8 GEMMs run as one chain (one hand-out
 * of rows to the workers for the whole chain). */
static void run_steps(kiln_session *s, int begin, int end, int64_t batch) {
  for (int i = begin; i < end;) {
    int n = kiln_qgemm_chain_len(s, i);
    if (n > end - i) n = end - i;
    if (n >= 2) {
      kiln_exec_qgemm_chain(s, &s->steps[i], n, batch);
      i += n;
    } else {
      exec_step(s, &s->steps[i], batch);
      i++;
    }
  }
}

static void declared_shape(const kiln_ir_value *v, char *buf, size_t cap) {
  size_t used = (size_t)snprintf(buf, cap, "[");
  for (int i = 0; i < v->rank && used < cap; i++) {
    const char *sep = i ? ", " : "";
    if (v->dims[i].value < 0)
      used += (size_t)snprintf(buf + used, cap - used, "%s%s", sep,
                               v->dims[i].param ? v->dims[i].param : "batch");
    else
      used += (size_t)snprintf(buf + used, cap - used, "%s%lld", sep, (long long)v->dims[i].value);
  }
  if (used < cap) snprintf(buf + used, cap - used, "]");
}

/* The graph input a view binds to: by name when it has one, else by position among the
 * graph inputs other than `skip` (-1: none skipped). -1 when there is none. */
static int view_target(const kiln_session *s, const kiln_tensor_view *inputs, int j, int skip) {
  if (inputs[j].name) {
    for (int i = 0; i < s->n_inputs; i++)
      if (i != skip && strcmp(inputs[j].name, s->inputs[i].name) == 0) return i;
    return -1;
  }
  int i = j + (skip >= 0 && j >= skip);
  return i < s->n_inputs ? i : -1;
}

/* "a", "b", "c": the graph inputs other than skip, for messages. */
static void input_names(const kiln_session *s, int skip, char *buf, size_t cap) {
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < s->n_inputs && used < cap; i++) {
    if (i == skip) continue;
    used += (size_t)snprintf(buf + used, cap - used, "%s\"%s\"", used ? ", " : "",
                             s->inputs[i].name);
  }
}

/* Matches the views to the graph inputs (every input but `skip`, which run_tokens_io
 * feeds with token ids), checks them and finds the batch. A view with a name binds to
 * the input of that name, one without to the input at its position; each input must be
 * bound exactly once. No heap: the checks are quadratic in the (few) inputs. */
static kiln_status bind_inputs(kiln_session *s, const kiln_tensor_view *inputs, int n_inputs,
                               int skip, int64_t *batch_out, kiln_error *err) {
  int want_n = s->n_inputs - (skip >= 0);
  char names[400];
  if (n_inputs != want_n) {
    input_names(s, skip, names, sizeof names);
    return kiln_error_set(err, KILN_E_INVALID, "run: %d inputs given, the graph %s %d (%s)",
                          n_inputs, skip >= 0 ? "takes dense" : "has", want_n, names);
  }
  if (n_inputs && !inputs) return kiln_error_set(err, KILN_E_INVALID, "run: inputs is NULL");
  for (int j = 0; j < n_inputs; j++) {
    int i = view_target(s, inputs, j, skip);
    if (i < 0) {
      input_names(s, skip, names, sizeof names);
      if (inputs[j].name && skip >= 0 && !strcmp(inputs[j].name, s->inputs[skip].name))
        return kiln_error_set(err, KILN_E_INVALID,
                              "run: input \"%s\" is given as token ids and as a tensor",
                              inputs[j].name);
      return kiln_error_set(err, KILN_E_INVALID, "run: no graph input named \"%s\" (expected %s)",
                            inputs[j].name ? inputs[j].name : "?", names);
    }
    for (int k = 0; k < j; k++)
      if (view_target(s, inputs, k, skip) == i)
        return kiln_error_set(err, KILN_E_INVALID,
                              "run: input \"%s\" is given twice (views %d and %d)",
                              s->inputs[i].name, k, j);
  }
  int64_t batch = -1;
  for (int j = 0; j < n_inputs; j++) {
    int i = view_target(s, inputs, j, skip);
    const kiln_ir_value *decl = &s->inputs[i];
    const kiln_tensor_view *v = &inputs[j];
    char want[160];
    declared_shape(decl, want, sizeof want);
    if (v->dtype != decl->dtype)
      return kiln_error_set(err, KILN_E_INVALID, "run: input \"%s\" is %s, expected %s %s",
                            decl->name, kiln_dtype_name(v->dtype), kiln_dtype_name(decl->dtype),
                            want);
    if (v->rank != decl->rank)
      return kiln_error_set(err, KILN_E_SHAPE, "run: input \"%s\" has rank %d, expected %d %s",
                            decl->name, v->rank, decl->rank, want);
    for (int d = 0; d < decl->rank; d++) {
      int64_t got = v->dims[d];
      if (decl->dims[d].value >= 0) {
        if (got != decl->dims[d].value)
          return kiln_error_set(err, KILN_E_SHAPE,
                                "run: input \"%s\": dim %d is %lld, expected %lld (shape %s)",
                                decl->name, d, (long long)got, (long long)decl->dims[d].value, want);
      } else {
        if (got < 1 || got > s->max_batch)
          return kiln_error_set(err, KILN_E_SHAPE,
                                "run: input \"%s\": batch dim %d is %lld, expected 1..%lld "
                                "(max_batch of this session; shape %s)",
                                decl->name, d, (long long)got, (long long)s->max_batch, want);
        if (batch >= 0 && got != batch)
          return kiln_error_set(err, KILN_E_SHAPE,
                                "run: input \"%s\": batch dim %d is %lld, but the batch is %lld "
                                "from an earlier dim or input",
                                decl->name, d, (long long)got, (long long)batch);
        batch = got;
      }
    }
    if (!v->data)
      return kiln_error_set(err, KILN_E_INVALID, "run: input \"%s\" has no data", decl->name);
    s->ptr[s->input_val[i]] = v->data;
  }
  *batch_out = batch;
  return KILN_OK;
}

static kiln_status fill_outputs(kiln_session *s, int64_t batch, kiln_tensor_view *outputs,
                                int n_outputs) {
  for (int i = 0; i < n_outputs; i++) {
    const kiln_rt_value *v = &s->values[s->output_val[i]];
    kiln_tensor_view *o = &outputs[i];
    o->name = s->outputs[i].name;
    o->dtype = v->dtype;
    o->rank = v->shape.rank;
    memset(o->dims, 0, sizeof o->dims);
    kiln_shape_eval(&v->shape, batch, o->dims);
    o->data = s->ptr[s->output_val[i]];
  }
  return KILN_OK;
}

static kiln_status check_outputs(const kiln_session *s, const kiln_tensor_view *outputs,
                                 int n_outputs, kiln_error *err) {
  if (n_outputs != s->n_outputs)
    return kiln_error_set(err, KILN_E_INVALID, "run: room for %d outputs given, the graph has %d",
                          n_outputs, s->n_outputs);
  if (n_outputs && !outputs) return kiln_error_set(err, KILN_E_INVALID, "run: outputs is NULL");
  return KILN_OK;
}

kiln_status kiln_session_run(kiln_session *s, const kiln_tensor_view *inputs, int n_inputs,
                             kiln_tensor_view *outputs, int n_outputs, kiln_error *err) {
  if (!s) return kiln_error_set(err, KILN_E_INVALID, "run: the session is NULL");
  kiln_status st = check_outputs(s, outputs, n_outputs, err);
  int64_t batch = 1;
  if (st || (st = bind_inputs(s, inputs, n_inputs, -1, &batch, err))) return st;
  if (batch < 0) batch = 1;
  run_steps(s, 0, s->n_steps, batch);
  return fill_outputs(s, batch, outputs, n_outputs);
}

/* Which step can take input `in` as token ids: a Gemm/MatMul reading it alone as its A
 * with constant packed weights (it gathers weight rows), or a Concat along the last axis
 * of rank-2 rows (it writes the multi-hot columns straight into its output). The input
 * must have no other reader. -1 when none; *concat says which kind. */
static int token_consumer(const kiln_session *s, int in, int *concat) {
  int v = s->input_val[in], uses = 0, step = -1;
  *concat = 0;
  if (s->values[v].shape.rank != 2 || s->values[v].dtype != KILN_DTYPE_FLOAT) return -1;
  for (int i = 0; i < s->n_steps; i++)
    for (int k = 0; k < s->steps[i].n_in; k++)
      if (s->steps[i].in[k] == v) {
        uses++;
        step = i;
      }
  if (uses != 1 || s->values[v].is_output) return -1;
  const kiln_step *sp = &s->steps[step];
  if (sp->op == KILN_OP_GEMM && sp->in[0] == v && sp->b_packed && !sp->trans_a) return step;
  if (sp->op == KILN_OP_CONCAT && sp->axis == 1 && s->values[sp->out[0]].shape.rank == 2 &&
      s->values[sp->out[0]].dtype == KILN_DTYPE_FLOAT) {
    *concat = 1;
    return step;
  }
  return -1;
}

/* Concat along the last axis where input `v` is given as token ids: its columns of
 * each output row are the multi-hot row (ids outside [0, width) ignored). */
static void exec_concat_tokens(kiln_session *s, const kiln_step *st, int64_t rows, int v,
                               const int64_t *offsets, const int32_t *tokens) {
  int64_t total = kiln_shape_dim(&s->values[st->out[0]].shape, 1, rows);
  float *out = s->ptr[st->out[0]];
  for (int64_t r = 0; r < rows; r++) {
    float *row = out + r * total;
    for (int k = 0; k < st->n_in; k++) {
      int64_t w = kiln_shape_dim(&s->values[st->in[k]].shape, 1, rows);
      if (st->in[k] == v) {
        memset(row, 0, (size_t)w * sizeof(float));
        for (int64_t p = offsets[r]; p < offsets[r + 1]; p++)
          if (tokens[p] >= 0 && tokens[p] < w) row[tokens[p]] = 1.0f;
      } else if (w) {
        const float *src = s->ptr[st->in[k]];
        memcpy(row, src + r * w, (size_t)w * sizeof(float));
      }
      row += w;
    }
  }
}

kiln_status kiln_session_run_tokens_io(kiln_session *s, const char *token_input,
                                       const int64_t *offsets, const int32_t *tokens,
                                       int64_t rows, const kiln_tensor_view *others,
                                       int n_others, kiln_tensor_view *outputs, int n_outputs,
                                       kiln_error *err) {
  if (!s) return kiln_error_set(err, KILN_E_INVALID, "run_tokens: the session is NULL");
  kiln_status st = check_outputs(s, outputs, n_outputs, err);
  if (st) return st;
  if (s->n_inputs < 1)
    return kiln_error_set(err, KILN_E_UNSUPPORTED, "run_tokens: the graph has no input");
  int t = 0;
  if (token_input) {
    for (t = 0; t < s->n_inputs; t++)
      if (strcmp(s->inputs[t].name, token_input) == 0) break;
    if (t == s->n_inputs) {
      char names[400];
      input_names(s, -1, names, sizeof names);
      return kiln_error_set(err, KILN_E_INVALID,
                            "run_tokens: no graph input named \"%s\" (expected %s)", token_input,
                            names);
    }
  }
  int concat = 0;
  int step = token_consumer(s, t, &concat);
  const kiln_ir_value *decl = &s->inputs[t];
  if (step < 0)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "run_tokens: graph input \"%s\" is not read by exactly one Gemm/MatMul "
                          "with constant weights (and transA=0) nor by one Concat of rows along "
                          "the last axis, so it cannot take token ids; run it on dense rows",
                          decl->name);
  if (decl->dims[0].value >= 0 ? rows != decl->dims[0].value : (rows < 1 || rows > s->max_batch))
    return kiln_error_set(err, KILN_E_SHAPE,
                          "run_tokens: %lld rows, expected %s%lld (input \"%s\")", (long long)rows,
                          decl->dims[0].value >= 0 ? "" : "1..",
                          (long long)(decl->dims[0].value >= 0 ? decl->dims[0].value : s->max_batch),
                          decl->name);
  if (!offsets || (!tokens && offsets[rows] > offsets[0]))
    return kiln_error_set(err, KILN_E_INVALID, "run_tokens: offsets or tokens is NULL");
  if (offsets[0] < 0)
    return kiln_error_set(err, KILN_E_INVALID, "run_tokens: offsets[0]=%lld is negative",
                          (long long)offsets[0]);
  for (int64_t r = 0; r < rows; r++)
    if (offsets[r + 1] < offsets[r])
      return kiln_error_set(err, KILN_E_INVALID,
                            "run_tokens: offsets[%lld]=%lld < offsets[%lld]=%lld (must not decrease)",
                            (long long)r + 1, (long long)offsets[r + 1], (long long)r,
                            (long long)offsets[r]);
  int64_t batch = -1;
  if ((st = bind_inputs(s, others, n_others, t, &batch, err))) {
    if (s->n_inputs > 1 && n_others != s->n_inputs - 1)
      kiln_error_prefix(err, "run_tokens (token ids for \"%s\")", decl->name);
    return st;
  }
  int64_t tb = decl->dims[0].value >= 0 ? -1 : rows; /* the batch the token rows set */
  if (batch >= 0 && tb >= 0 && batch != tb)
    return kiln_error_set(err, KILN_E_SHAPE,
                          "run_tokens: %lld rows of token ids for \"%s\", but the other inputs "
                          "have a batch of %lld",
                          (long long)rows, decl->name, (long long)batch);
  if (batch < 0) batch = tb >= 0 ? tb : 1;
  s->ptr[s->input_val[t]] = NULL; /* never read: the token step takes the ids */
  run_steps(s, 0, step, batch);
  if (concat)
    exec_concat_tokens(s, &s->steps[step], rows, s->input_val[t], offsets, tokens);
  else
    kiln_exec_gemm_tokens(s, &s->steps[step], rows, offsets, tokens);
  run_steps(s, step + 1, s->n_steps, batch);
  return fill_outputs(s, batch, outputs, n_outputs);
}

kiln_status kiln_session_run_tokens(kiln_session *s, const int64_t *offsets,
                                    const int32_t *tokens, int64_t rows,
                                    kiln_tensor_view *outputs, int n_outputs, kiln_error *err) {
  if (s && s->n_inputs > 1)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "run_tokens: the graph has %d inputs; give the token input's name and "
                          "the other inputs with kiln_session_run_tokens_io",
                          s->n_inputs);
  return kiln_session_run_tokens_io(s, NULL, offsets, tokens, rows, NULL, 0, outputs, n_outputs,
                                    err);
}
