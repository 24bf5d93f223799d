/* kiln trainer — compile: outputs' losses, weights and metrics, log keys, the active
 * part of the graph. */
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "custom_layer.h"
#include "model_internal.h"

/* compile ------------------------------------------------------------------ */

static char *key_join(const char *a, const char *b, const char *c) {
  size_t n = strlen(a) + strlen(b) + strlen(c) + 1;
  char *s = malloc(n);
  if (s) snprintf(s, n, "%s%s%s", a, b, c);
  return s;
}

/* Log entries the model's logs hold (training side): "loss", per-output losses with
 * several outputs, and every metric. Validation doubles them. */
static int log_entries(const kiln_model *m, int extra_metrics) {
  int n = 1 + (m->n_outs > 1 ? m->n_outs : 0) + extra_metrics;
  for (int k = 0; k < m->n_outs; k++) n += m->outs[k].n_metrics;
  return n;
}

/* Adds metric to output k with its log keys ("<name>" with one output, Keras'
 * "<output>_<name>" with several, and the val_ forms). Takes ownership. */
static kiln_status add_metric(kiln_model *m, int k, kiln_metric *metric, kiln_error *err) {
  kiln_output *o = &m->outs[k];
  if (log_entries(m, 1) > KILN_LOGS_MAX / 2) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_INVALID,
                          "too many metrics (the logs hold at most %d figures with the losses)",
                          KILN_LOGS_MAX / 2);
  }
  for (int i = 0; i < o->n_metrics; i++)
    if (strcmp(o->metrics[i]->name, metric->name) == 0) {
      kiln_error_set(err, KILN_E_INVALID, "metric \"%s\" is given twice%s%s%s", metric->name,
                     m->n_outs > 1 ? " for output \"" : "",
                     m->n_outs > 1 ? m->layers[o->node].name : "", m->n_outs > 1 ? "\"" : "");
      kiln_metric_free(metric);
      return KILN_E_INVALID;
    }
  kiln_metric **p = realloc(o->metrics, (size_t)(o->n_metrics + 1) * sizeof *p);
  if (!p) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_NOMEM, "metrics: out of memory");
  }
  o->metrics = p;
  int i = o->n_metrics;
  const char *prefix = m->n_outs > 1 ? m->layers[o->node].name : "";
  const char *sep = m->n_outs > 1 ? "_" : "";
  o->metric_keys[i] = key_join(prefix, sep, metric->name);
  char *val_prefix = key_join("val_", prefix, sep);
  o->val_metric_keys[i] = val_prefix ? key_join(val_prefix, "", metric->name) : NULL;
  free(val_prefix);
  o->metrics[o->n_metrics++] = metric;
  if (!o->metric_keys[i] || !o->val_metric_keys[i])
    return kiln_error_set(err, KILN_E_NOMEM, "metrics: out of memory");
  return KILN_OK;
}

void kiln_output_config_init(kiln_output_config *c) {
  memset(c, 0, sizeof *c);
  c->loss_weight = 1.0f;
}

/* Marks the layers some output depends on; 0 and an error when an Input they need is
 * not among the model's inputs. */
static kiln_status mark_active(kiln_model *m, const kiln_node *ins, int n_in, const kiln_node *outs,
                               int n_out, kiln_error *err) {
  for (int i = 0; i < m->n_layers; i++) m->layers[i].active = 0;
  for (int k = 0; k < n_out; k++) m->layers[outs[k]].active = 1;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    kiln_layer *l = &m->layers[i];
    if (!l->active) continue;
    for (int j = 0; j < l->n_inputs; j++) m->layers[l->inputs[j]].active = 1;
  }
  for (int i = 0; i < m->n_layers; i++) {
    if (m->layers[i].kind != KILN_LAYER_INPUT || !m->layers[i].active) continue;
    int listed = 0;
    for (int j = 0; j < n_in; j++) listed |= ins[j] == i;
    if (!listed)
      return kiln_error_set(err, KILN_E_INVALID,
                            "compile: the outputs depend on Input \"%s\", which is not among "
                            "the model's inputs (add it with kiln_model_set_inputs)",
                            m->layers[i].name);
  }
  return KILN_OK;
}

kiln_status kiln_model_compile_outputs(kiln_model *m, const kiln_optimizer *opt,
                                       const kiln_output_config *outputs, int n_outputs,
                                       kiln_error *err) {
  if (m->n_layers == 0 || m->layers[0].kind != KILN_LAYER_INPUT)
    return kiln_error_set(err, KILN_E_INVALID, "compile: the model needs an Input layer first");
  if (!(opt->learning_rate > 0) || !isfinite(opt->learning_rate))
    return kiln_error_set(err, KILN_E_INVALID, "compile: learning_rate must be positive, got %g",
                          opt->learning_rate);
  kiln_node ins[KILN_MAX_IO], outs[KILN_MAX_IO];
  int n_in = kiln_model_resolve_inputs(m, ins);
  int n_out = kiln_model_resolve_outputs(m, outs);
  if (n_in == 0)
    return kiln_error_set(err, KILN_E_INVALID, "compile: the model needs an Input layer first");
  if (n_outputs != n_out)
    return kiln_error_set(err, KILN_E_INVALID,
                          "compile: %d output configs for a model with %d outputs", n_outputs,
                          n_out);
  /* Each output's config, by name or position. */
  int cfg_of[KILN_MAX_IO];
  for (int k = 0; k < n_out; k++) cfg_of[k] = -1;
  int by_name = outputs[0].output != NULL;
  for (int i = 0; i < n_outputs; i++) {
    const kiln_output_config *c = &outputs[i];
    if ((c->output != NULL) != by_name)
      return kiln_error_set(err, KILN_E_INVALID,
                            "compile: outputs[%d]: name every output config or none", i);
    int k = i;
    if (by_name) {
      k = -1;
      for (int j = 0; j < n_out; j++)
        if (strcmp(m->layers[outs[j]].name, c->output) == 0) k = j;
      if (k < 0)
        return kiln_error_set(err, KILN_E_INVALID,
                              "compile: outputs[%d]: \"%s\" is not an output of the model", i,
                              c->output);
      if (cfg_of[k] >= 0)
        return kiln_error_set(err, KILN_E_INVALID,
                              "compile: output \"%s\" is configured twice (outputs[%d] and [%d])",
                              c->output, cfg_of[k], i);
    }
    cfg_of[k] = i;
    if ((unsigned)c->loss > KILN_LOSS_MEAN_ABSOLUTE_ERROR)
      return kiln_error_set(err, KILN_E_INVALID, "compile: unknown loss %d", (int)c->loss);
    if (!(c->loss_weight >= 0.0f) || !isfinite(c->loss_weight))
      return kiln_error_set(err, KILN_E_INVALID,
                            "compile: output \"%s\": loss_weight must be finite and >= 0, got %g",
                            m->layers[outs[k]].name, c->loss_weight);
    if (c->n_metrics < 0 || (c->n_metrics > 0 && !c->metrics))
      return kiln_error_set(err, KILN_E_INVALID, "compile: output \"%s\": bad metrics list",
                            m->layers[outs[k]].name);
  }
  for (int k = 0; k < n_out; k++)
    if (m->layers[outs[k]].kind == KILN_LAYER_INPUT)
      return kiln_error_set(err, KILN_E_INVALID,
                            n_out == 1 ? "compile: the model has no layer after its Input"
                                       : "compile: output \"%s\" is an Input layer",
                            m->layers[outs[k]].name);
  kiln_status s = mark_active(m, ins, n_in, outs, n_out, err);
  if (s) return s;
  kiln_model_free_compile_state(m);
  m->opt = *opt;
  m->iterations = 0;
  memcpy(m->inputs, ins, sizeof ins);
  m->n_inputs = n_in;
  memcpy(m->outputs, outs, sizeof outs);
  m->n_outputs = n_out;
  m->n_outs = n_out;
  for (int i = 0; i < m->n_layers; i++) m->layers[i].fused = 0;
  for (int k = 0; k < n_out; k++) {
    kiln_output *o = &m->outs[k];
    const kiln_output_config *c = &outputs[cfg_of[k]];
    kiln_layer *l = &m->layers[outs[k]];
    o->node = outs[k];
    o->loss = c->loss;
    o->weight = c->loss_weight;
    /* The loss gradient goes straight into the layer unless other layers feed
     * gradient into it too; only then may the loss take its logits. */
    o->direct = 1;
    for (int i = o->node + 1; i < m->n_layers; i++)
      for (int j = 0; j < m->layers[i].n_inputs; j++)
        if (m->layers[i].active && m->layers[i].inputs[j] == o->node) o->direct = 0;
    l->fused = o->direct && l->kind == KILN_LAYER_DENSE && kiln_loss_fuses(c->loss, l->activation);
    if (n_out > 1) {
      o->loss_key = key_join(l->name, "_loss", "");
      o->val_loss_key = key_join("val_", l->name, "_loss");
      if (!o->loss_key || !o->val_loss_key) {
        kiln_model_free_compile_state(m);
        return kiln_error_set(err, KILN_E_NOMEM, "compile: out of memory");
      }
    }
  }
  for (int k = 0; k < n_out; k++) {
    kiln_output *o = &m->outs[k];
    const kiln_output_config *c = &outputs[cfg_of[k]];
    if (c->n_metrics > 0) {
      o->metric_names = calloc((size_t)c->n_metrics, sizeof(char *));
      if (!o->metric_names) {
        kiln_model_free_compile_state(m);
        return kiln_error_set(err, KILN_E_NOMEM, "compile: out of memory");
      }
    }
    for (int i = 0; i < c->n_metrics; i++) {
      kiln_metric *metric;
      s = kiln_metric_create(c->metrics[i], o->loss, &metric, err);
      if (s) {
        if (n_out > 1) kiln_error_prefix(err, "compile: output \"%s\": metrics[%d]",
                                         m->layers[o->node].name, i);
        else kiln_error_prefix(err, "compile: metrics[%d]", i);
        kiln_model_free_compile_state(m);
        return s;
      }
      s = add_metric(m, k, metric, err);
      if (s) {
        kiln_model_free_compile_state(m);
        return s;
      }
      o->metric_names[o->n_metric_names] = strdup(c->metrics[i]);
      if (!o->metric_names[o->n_metric_names++]) {
        kiln_model_free_compile_state(m);
        return kiln_error_set(err, KILN_E_NOMEM, "compile: out of memory");
      }
    }
  }
  if (log_entries(m, 0) > KILN_LOGS_MAX / 2) {
    kiln_model_free_compile_state(m);
    return kiln_error_set(err, KILN_E_INVALID,
                          "compile: too many metrics (the logs hold at most %d figures with the "
                          "losses)", KILN_LOGS_MAX / 2);
  }
  m->loss = m->outs[0].loss;
  m->metric_names = m->outs[0].metric_names;
  m->n_metric_names = m->outs[0].n_metric_names;
  s = kiln_optimizer_prepare(m, err);
  if (s) {
    kiln_model_free_compile_state(m);
    return s;
  }
  /* The buffer set (logits, scratch) depends on the outputs: rebuild at next use. */
  for (int i = 0; i < m->n_layers; i++) kiln_layer_free_batch_buffers(&m->layers[i]);
  m->cap_rows = 0;
  m->compiled = 1;
  return KILN_OK;
}

kiln_status kiln_model_compile(kiln_model *m, const kiln_optimizer *opt, kiln_loss loss,
                               const char *const *metrics, int n_metrics, kiln_error *err) {
  if ((unsigned)loss > KILN_LOSS_MEAN_ABSOLUTE_ERROR)
    return kiln_error_set(err, KILN_E_INVALID, "compile: unknown loss %d", (int)loss);
  kiln_output_config cfg[KILN_MAX_IO];
  int n = kiln_model_output_count(m);
  if (n < 1) n = 1; /* an empty model: compile_outputs names what is missing */
  for (int k = 0; k < n; k++) {
    kiln_output_config_init(&cfg[k]);
    cfg[k].loss = loss;
    cfg[k].metrics = metrics;
    cfg[k].n_metrics = n_metrics;
  }
  return kiln_model_compile_outputs(m, opt, cfg, n, err);
}

kiln_status kiln_model_add_output_metric(kiln_model *m, int output, kiln_metric *metric,
                                         kiln_error *err) {
  if (!m->compiled) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_INVALID, "add_metric: compile the model first");
  }
  if (output < 0 || output >= m->n_outs) {
    kiln_metric_free(metric);
    return kiln_error_set(err, KILN_E_INVALID, "add_metric: output %d does not exist (the model has %d)",
                          output, m->n_outs);
  }
  return add_metric(m, output, metric, err);
}

kiln_status kiln_model_add_metric(kiln_model *m, kiln_metric *metric, kiln_error *err) {
  return kiln_model_add_output_metric(m, 0, metric, err);
}

kiln_loss kiln_model_output_loss(const kiln_model *m, int output) {
  return output >= 0 && output < m->n_outs ? m->outs[output].loss : m->loss;
}

float kiln_model_output_loss_weight(const kiln_model *m, int output) {
  return output >= 0 && output < m->n_outs ? m->outs[output].weight : 0.0f;
}
