/* The book's low-level training loop (listings 7.21-7.24) on Fashion-MNIST: the
 * get_mnist_model() network (784 -> 512 relu -> Dropout 0.5 -> 10 softmax), Adam,
 * sparse categorical crossentropy, batch 32, 3 epochs, the first 10,000 training
 * images held out for validation. Instead of fit, each step runs the forward pass
 * with training on, takes the loss and its gradients, lets the optimizer apply them
 * and updates a standalone accuracy metric, as train_step does in the book. One JSON
 * line per epoch, then the summary line. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "example_common.h"

#define BATCH 32
#define VAL_ROWS 10000

/* The book's shuffling of each epoch, from the example's own seeded generator. */
static uint64_t next_random(uint64_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

/* The book's test_step: predictions = model(inputs, training=False), the loss from them
 * (crossentropy of the true class, probabilities clipped as Keras) and the accuracy, over
 * rows [begin, end) in chunks. */
static void evaluate_rows(kiln_model *m, const kiln_matrix *x, const kiln_matrix *y, int64_t begin,
                          int64_t end, kiln_metric *acc, double *loss_out) {
  kiln_error err = {0};
  acc->reset_state(acc);
  double sum = 0;
  for (int64_t b = begin; b < end; b += 1000) {
    int64_t n = end - b < 1000 ? end - b : 1000;
    kiln_matrix bx = {.rows = n, .cols = x->cols, .values = x->values + b * x->cols, .borrowed = 1};
    kiln_matrix by = {.rows = n, .cols = 1, .values = y->values + b, .borrowed = 1};
    kiln_io xi = {.n = 1, .data = {&bx}};
    kiln_matrix out;
    example_check(kiln_model_forward(m, &xi, 0, &out, &err), "test_step", &err);
    acc->update_state(acc, by.values, 1, out.values, out.cols, n);
    for (int64_t i = 0; i < n; i++) {
      double p = out.values[i * out.cols + (int64_t)by.values[i]];
      sum -= log(p < 1e-7 ? 1e-7 : p > 1 - 1e-7 ? 1 - 1e-7 : p);
    }
    kiln_matrix_free(&out);
  }
  *loss_out = sum / (double)(end - begin);
}

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv, "usage: example_custom_loop [flags]", &a);
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  kiln_dataset train = {0}, test = {0};
  example_check(kiln_dataset_load("fashion_mnist", &lo, &train, &test, &err), "fashion_mnist",
                &err);
  const int64_t cols = train.x.cols, n_train = train.x.rows - VAL_ROWS;
  int epochs = a.epochs ? a.epochs : 3;

  kiln_model *m;
  kiln_node in, h, d, out;
  example_check(kiln_model_create(a.seed, &m, &err), "model", &err);
  example_check(kiln_model_input(m, NULL, cols, &in, &err), "model", &err);
  kiln_dense_options o;
  kiln_dense_options_init(&o);
  o.activation = KILN_ACTIVATION_RELU;
  example_check(kiln_model_dense(m, in, 512, &o, &h, &err), "model", &err);
  example_check(kiln_model_dropout(m, h, 0.5f, NULL, &d, &err), "model", &err);
  o.activation = KILN_ACTIVATION_SOFTMAX;
  example_check(kiln_model_dense(m, d, 10, &o, &out, &err), "model", &err);
  kiln_optimizer adam;
  kiln_optimizer_init(&adam, KILN_OPTIMIZER_ADAM);
  example_check(kiln_model_compile(m, &adam, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, NULL, 0,
                                   &err), "compile", &err);
  kiln_metric *acc;
  example_check(kiln_metric_create("sparse_categorical_accuracy",
                                   KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, &acc, &err),
                "metric", &err);

  int64_t *order = malloc((size_t)n_train * sizeof *order);
  kiln_matrix bx = {0}, by = {0};
  if (!order || kiln_matrix_alloc(&bx, BATCH, cols, &err) || kiln_matrix_alloc(&by, BATCH, 1, &err)) {
    fprintf(stderr, "custom_loop: out of memory\n");
    return 2;
  }
  uint64_t rng = a.seed * 0x9E3779B97F4A7C15ull + 1;
  double t0 = example_now(), loss_mean = 0, val_loss = 0;
  for (int epoch = 0; epoch < epochs; epoch++) {
    for (int64_t i = 0; i < n_train; i++) order[i] = VAL_ROWS + i;
    for (int64_t i = n_train - 1; i > 0; i--) {
      int64_t j = (int64_t)(next_random(&rng) % (uint64_t)(i + 1)), t = order[i];
      order[i] = order[j];
      order[j] = t;
    }
    acc->reset_state(acc);
    double loss_sum = 0;
    for (int64_t b = 0; b < n_train; b += BATCH) {
      int64_t n = n_train - b < BATCH ? n_train - b : BATCH;
      for (int64_t i = 0; i < n; i++) {
        memcpy(bx.values + i * cols, train.x.values + order[b + i] * cols,
               (size_t)cols * sizeof(float));
        by.values[i] = train.y.values[order[b + i]];
      }
      bx.rows = by.rows = n;
      kiln_io xi = {.n = 1, .data = {&bx}}, yi = {.n = 1, .data = {&by}};
      /* train_step: predictions = model(inputs, training=True); loss = loss_fn(...);
       * gradients; optimizer.apply(gradients, model.trainable_weights). */
      double loss;
      kiln_matrix pred;
      example_check(kiln_model_compute_gradients(m, &xi, &yi, 1, &loss, NULL, &pred, &err),
                    "train_step", &err);
      example_check(kiln_model_apply_gradients(m, &err), "train_step", &err);
      acc->update_state(acc, by.values, 1, pred.values, pred.cols, n);
      kiln_matrix_free(&pred);
      loss_sum += loss * (double)n;
    }
    bx.rows = by.rows = BATCH;
    loss_mean = loss_sum / (double)n_train;
    double train_acc = acc->result(acc);
    evaluate_rows(m, &train.x, &train.y, 0, VAL_ROWS, acc, &val_loss);
    printf("{\"epoch\": %d, \"loss\": %.4f, \"accuracy\": %.4f, \"val_loss\": %.4f, "
           "\"val_accuracy\": %.4f}\n", epoch + 1, loss_mean, train_acc, val_loss, acc->result(acc));
    fflush(stdout);
  }
  double train_seconds = example_now() - t0, test_loss;
  evaluate_rows(m, &test.x, &test.y, 0, test.x.rows, acc, &test_loss);
  printf("{\"example\": \"custom_loop\", \"seed\": %llu, \"epochs\": %d, \"test_loss\": %.4f, "
         "\"test_accuracy\": %.4f, \"train_seconds\": %.2f}\n",
         (unsigned long long)a.seed, epochs, test_loss, acc->result(acc), train_seconds);
  kiln_metric_free(acc);
  kiln_matrix_free(&bx);
  kiln_matrix_free(&by);
  free(order);
  kiln_model_free(m);
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  return 0;
}
