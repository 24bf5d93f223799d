/* Listing 7.18: a custom metric (RootMeanSquaredError, examples/rmse_metric.h) used
 * like a built-in one, next to "accuracy", in listing 7.17's workflow: the functional
 * get_mnist_model() (784 -> Dense 512 relu -> Dropout 0.5 -> Dense 10 softmax), adam,
 * sparse categorical crossentropy, 3 epochs (batch 32, Keras' default) validated on the
 * first 10,000 training images, then evaluate on the test set. On Fashion-MNIST (the
 * Debian package) in place of MNIST, whose training images are not available here. */
#include <stdio.h>
#include <stdlib.h>

#include "example_common.h"
#include "rmse_metric.h"

static kiln_model *get_mnist_model(uint64_t seed, kiln_error *err) {
  kiln_model *m;
  kiln_node in, features, out;
  example_check(kiln_model_create(seed, &m, err), "model", err);
  example_check(kiln_model_input(m, "input", 28 * 28, &in, err), "model", err);
  kiln_dense_options d;
  kiln_dense_options_init(&d);
  d.activation = KILN_ACTIVATION_RELU;
  example_check(kiln_model_dense(m, in, 512, &d, &features, err), "model", err);
  example_check(kiln_model_dropout(m, features, 0.5f, NULL, &features, err), "model", err);
  d.activation = KILN_ACTIVATION_SOFTMAX;
  example_check(kiln_model_dense(m, features, 10, &d, &out, err), "model", err);
  example_check(kiln_model_set_output(m, out, err), "model", err);
  return m;
}

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv, "usage: example_custom_metric [flags]", &a);
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  kiln_dataset all = {0}, test = {0}, train = {0}, val = {0};
  example_check(kiln_dataset_load("fashion_mnist", &lo, &all, &test, &err), "fashion_mnist",
                &err);
  /* train_images, val_images = images[10000:], images[:10000] */
  int64_t n = all.x.rows, n_val = 10000;
  int64_t *idx = malloc((size_t)n * sizeof(int64_t));
  if (!idx) return 2;
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  example_check(kiln_dataset_take(&all, idx, n_val, &val, &err), "split", &err);
  example_check(kiln_dataset_take(&all, idx + n_val, n - n_val, &train, &err), "split", &err);
  free(idx);
  kiln_dataset_free(&all);

  double t0 = example_now();
  kiln_model *m = get_mnist_model(a.seed, &err);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"accuracy"};
  example_check(kiln_model_compile(m, &opt, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, metrics, 1,
                                   &err), "compile", &err);
  /* metrics=["accuracy", RootMeanSquaredError()]: the model owns the metric. */
  kiln_metric *rmse = rmse_metric_create("rmse");
  if (!rmse) {
    fprintf(stderr, "rmse: out of memory\n");
    return 2;
  }
  example_check(kiln_model_add_metric(m, rmse, &err), "add_metric", &err);
  kiln_fit_options fo;
  example_fit_options(&a, 3, 32, &fo);
  fo.validation_x = &val.x;
  fo.validation_y = &val.y;
  kiln_history h = {0};
  example_check(kiln_model_fit(m, &train.x, &train.y, &fo, &h, &err), "fit", &err);
  double train_seconds = example_now() - t0;
  kiln_logs logs;
  example_check(kiln_model_evaluate(m, &test.x, &test.y, 1024, &logs, &err), "evaluate", &err);
  int last = h.epochs - 1;
  printf("{\"example\": \"custom_metric\", \"seed\": %llu, \"epochs\": %d, \"rmse\": %.4f, "
         "\"accuracy\": %.4f, \"val_rmse\": %.4f, \"val_accuracy\": %.4f, \"test_loss\": %.4f, "
         "\"test_accuracy\": %.4f, \"test_rmse\": %.4f, \"train_seconds\": %.2f}\n",
         (unsigned long long)a.seed, h.epochs, kiln_history_get(&h, "rmse", last),
         kiln_history_get(&h, "accuracy", last), kiln_history_get(&h, "val_rmse", last),
         kiln_history_get(&h, "val_accuracy", last), kiln_logs_get(&logs, "loss"),
         kiln_logs_get(&logs, "accuracy"), kiln_logs_get(&logs, "rmse"), train_seconds);
  kiln_history_free(&h);
  kiln_model_free(m);
  kiln_dataset_free(&train);
  kiln_dataset_free(&val);
  kiln_dataset_free(&test);
  return 0;
}
