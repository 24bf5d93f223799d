/* Fashion-MNIST (chapter 2/5's MNIST model on the Fashion set): 784 -> 512 relu ->
 * 10 softmax, rmsprop, batch 128, 5 epochs, sparse categorical crossentropy. */
#include <stdio.h>

#include "example_common.h"

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv, "usage: example_fashion_mnist [flags]", &a);
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  kiln_dataset train = {0}, test = {0};
  example_check(kiln_dataset_load("fashion_mnist", &lo, &train, &test, &err), "fashion_mnist",
                &err);
  double t0 = example_now();
  kiln_model *m;
  example_check(kiln_model_create(a.seed, &m, &err), "model", &err);
  example_check(kiln_model_add_input(m, 784, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 512, KILN_ACTIVATION_RELU, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 10, KILN_ACTIVATION_SOFTMAX, &err), "model", &err);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_RMSPROP);
  const char *metrics[] = {"accuracy"};
  example_check(kiln_model_compile(m, &opt, KILN_LOSS_SPARSE_CATEGORICAL_CROSSENTROPY, metrics, 1,
                                   &err), "compile", &err);
  kiln_fit_options fo;
  example_fit_options(&a, 5, 128, &fo);
  example_check(kiln_model_fit(m, &train.x, &train.y, &fo, NULL, &err), "fit", &err);
  double train_seconds = example_now() - t0;
  kiln_logs logs;
  example_check(kiln_model_evaluate(m, &test.x, &test.y, 1024, &logs, &err), "evaluate", &err);
  printf("{\"example\": \"fashion_mnist\", \"seed\": %llu, \"epochs\": %d, \"test_loss\": %.4f, "
         "\"test_accuracy\": %.4f, \"train_seconds\": %.2f}\n",
         (unsigned long long)a.seed, fo.epochs, kiln_logs_get(&logs, "loss"),
         kiln_logs_get(&logs, "accuracy"), train_seconds);
  kiln_model_free(m);
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  return 0;
}
