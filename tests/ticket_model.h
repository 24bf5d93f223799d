/* The ticket model of listing 7.9 built with the trainer's functional API (title,
 * text_body, tags -> Concatenate -> Dense(64, relu) -> priority Dense(1, sigmoid) and
 * department Dense(4, softmax); mse + sparse_categorical_crossentropy) and its random
 * data (multi-hot 0/1 rows as np.random.randint(0, 2), priority in [0, 1), department in
 * 0..3) from a fixed seed. Sizes are parameters so unit tests can use small ones.
 * Header-only: include once per test program (after cmocka.h). */
#ifndef KILN_TESTS_TICKET_MODEL_H
#define KILN_TESTS_TICKET_MODEL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kiln/train.h"

typedef struct ticket_sizes {
  int64_t vocabulary, tags, hidden, departments;
} ticket_sizes;

typedef struct ticket_set {
  kiln_matrix title, body, tags, priority, department;
} ticket_set;

static uint64_t ticket_next(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* Random rows; density: the share of ones (0.5 = randint(0, 2)). 0 on success. */
static int ticket_set_make(ticket_set *d, const ticket_sizes *z, int64_t rows, double density,
                           uint64_t seed) {
  memset(d, 0, sizeof *d);
  kiln_error e = {0};
  if (kiln_matrix_alloc(&d->title, rows, z->vocabulary, &e) ||
      kiln_matrix_alloc(&d->body, rows, z->vocabulary, &e) ||
      kiln_matrix_alloc(&d->tags, rows, z->tags, &e) ||
      kiln_matrix_alloc(&d->priority, rows, 1, &e) ||
      kiln_matrix_alloc(&d->department, rows, 1, &e))
    return -1;
  uint64_t s = seed | 1, cut = (uint64_t)(density * 4294967296.0);
  kiln_matrix *xs[3] = {&d->title, &d->body, &d->tags};
  for (int k = 0; k < 3; k++)
    for (int64_t i = 0; i < xs[k]->rows * xs[k]->cols; i++)
      xs[k]->values[i] = (ticket_next(&s) >> 32) < cut ? 1.0f : 0.0f;
  for (int64_t r = 0; r < rows; r++) {
    d->priority.values[r] = (float)((ticket_next(&s) >> 40) / (double)(1 << 24));
    d->department.values[r] = (float)(ticket_next(&s) % (uint64_t)z->departments);
  }
  return 0;
}

static void ticket_set_free(ticket_set *d) {
  kiln_matrix_free(&d->title);
  kiln_matrix_free(&d->body);
  kiln_matrix_free(&d->tags);
  kiln_matrix_free(&d->priority);
  kiln_matrix_free(&d->department);
}

static void ticket_inputs(const ticket_set *d, kiln_io *x, kiln_io *y) {
  memset(x, 0, sizeof *x);
  memset(y, 0, sizeof *y);
  x->n = 3;
  x->names[0] = "title";
  x->data[0] = &d->title;
  x->names[1] = "text_body";
  x->data[1] = &d->body;
  x->names[2] = "tags";
  x->data[2] = &d->tags;
  y->n = 2;
  y->names[0] = "priority";
  y->data[0] = &d->priority;
  y->names[1] = "department";
  y->data[1] = &d->department;
}

/* Built and compiled (rmsprop as the book; metrics mae and accuracy). NULL on failure,
 * with the message in err. */
static kiln_model *ticket_model_build(const ticket_sizes *z, uint64_t seed,
                                      kiln_optimizer_kind optimizer, kiln_error *err) {
  kiln_model *m = NULL;
  kiln_node title, body, tags, cat, feat, pri, dep;
  if (kiln_model_create(seed, &m, err)) return NULL;
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  kiln_node ins[3];
  if (kiln_model_input(m, "title", z->vocabulary, &title, err) ||
      kiln_model_input(m, "text_body", z->vocabulary, &body, err) ||
      kiln_model_input(m, "tags", z->tags, &tags, err))
    goto fail;
  ins[0] = title;
  ins[1] = body;
  ins[2] = tags;
  if (kiln_model_concatenate(m, ins, 3, "concatenate", &cat, err)) goto fail;
  o.activation = KILN_ACTIVATION_RELU;
  o.name = "dense";
  if (kiln_model_dense(m, cat, z->hidden, &o, &feat, err)) goto fail;
  o.activation = KILN_ACTIVATION_SIGMOID;
  o.name = "priority";
  if (kiln_model_dense(m, feat, 1, &o, &pri, err)) goto fail;
  o.activation = KILN_ACTIVATION_SOFTMAX;
  o.name = "department";
  if (kiln_model_dense(m, feat, z->departments, &o, &dep, err)) goto fail;
  kiln_node outs[2] = {pri, dep};
  if (kiln_model_set_inputs(m, ins, 3, err) || kiln_model_set_outputs(m, outs, 2, err)) goto fail;
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, optimizer);
  static const char *const m0[] = {"mae"}, *const m1[] = {"accuracy"};
  kiln_output_config c[2];
  kiln_output_config_init(&c[0]);
  kiln_output_config_init(&c[1]);
  c[0].loss = KILN_LOSS_MEAN_SQUARED_ERROR;
  c[0].metrics = m0;
  c[0].n_metrics = 1;
  c[1].loss = KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY;
  c[1].metrics = m1;
  c[1].n_metrics = 1;
  if (kiln_model_compile_outputs(m, &opt, c, 2, err)) goto fail;
  return m;
fail:
  kiln_model_free(m);
  return NULL;
}

#endif
