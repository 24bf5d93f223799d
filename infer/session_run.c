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

/* Matches the views to the graph inputs, checks them and finds the batch. */
static kiln_status bind_inputs(kiln_session *s, const kiln_tensor_view *inputs, int n_inputs,
                               int64_t *batch_out, kiln_error *err) {
  if (n_inputs != s->n_inputs)
    return kiln_error_set(err, KILN_E_INVALID, "run: %d inputs given, the graph has %d", n_inputs,
                          s->n_inputs);
  if (n_inputs && !inputs) return kiln_error_set(err, KILN_E_INVALID, "run: inputs is NULL");
  int64_t batch = -1;
  for (int i = 0; i < s->n_inputs; i++) {
    const kiln_ir_value *decl = &s->inputs[i];
    const kiln_tensor_view *v = NULL;
    if (inputs[i].name == NULL) {
      v = &inputs[i];
    } else {
      for (int j = 0; j < n_inputs; j++)
        if (inputs[j].name && strcmp(inputs[j].name, decl->name) == 0) v = &inputs[j];
      if (!v)
        return kiln_error_set(err, KILN_E_INVALID, "run: no input named \"%s\" was given",
                              decl->name);
    }
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
  *batch_out = batch < 0 ? 1 : batch;
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
  if (st || (st = bind_inputs(s, inputs, n_inputs, &batch, err))) return st;
  for (int i = 0; i < s->n_steps;) {
    int n = kiln_qgemm_chain_len(s, i);
    if (n >= 2) {
      kiln_exec_qgemm_chain(s, &s->steps[i], n, batch);
      i += n;
    } else {
      exec_step(s, &s->steps[i], batch);
      i++;
    }
  }
  return fill_outputs(s, batch, outputs, n_outputs);
}

kiln_status kiln_session_run_tokens(kiln_session *s, const int64_t *offsets,
                                    const int32_t *tokens, int64_t rows,
                                    kiln_tensor_view *outputs, int n_outputs, kiln_error *err) {
  if (!s) return kiln_error_set(err, KILN_E_INVALID, "run_tokens: the session is NULL");
  kiln_status st = check_outputs(s, outputs, n_outputs, err);
  if (st) return st;
  if (s->token_step < 0)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "run_tokens: the first graph input%s%s%s is not read by exactly one "
                          "Gemm/MatMul with constant weights (and transA=0), so it cannot take token ids",
                          s->n_inputs ? " \"" : "", s->n_inputs ? s->inputs[0].name : "",
                          s->n_inputs ? "\"" : "");
  if (s->n_inputs != 1)
    return kiln_error_set(err, KILN_E_UNSUPPORTED,
                          "run_tokens: the graph has %d inputs; token rows can feed a graph with "
                          "one input only", s->n_inputs);
  const kiln_ir_value *decl = &s->inputs[0];
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
  int64_t batch = decl->dims[0].value >= 0 ? 1 : rows;
  for (int i = 0; i < s->n_steps; i++) {
    if (i == s->token_step)
      kiln_exec_gemm_tokens(s, &s->steps[i], rows, offsets, tokens);
    else
      exec_step(s, &s->steps[i], batch);
  }
  return fill_outputs(s, batch, outputs, n_outputs);
}
