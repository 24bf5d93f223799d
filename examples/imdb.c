/* Chapter 4, IMDB: binary classification of reviews from 10,000-word multi-hot rows
 * (16-16-1, adam, batch 512, 4 epochs), evaluated on the 25,000 test reviews. */
#include <stdio.h>

#include "example_common.h"

int main(int argc, char **argv) {
  example_args a;
  example_parse(argc, argv, "usage: example_imdb [flags]", &a);
  kiln_error err = {0};
  kiln_load_options lo;
  kiln_load_options_init(&lo);
  lo.data_dir = a.data_dir;
  lo.num_words = 10000;
  kiln_dataset train = {0}, test = {0};
  example_check(kiln_dataset_load("imdb", &lo, &train, &test, &err), "imdb", &err);

  double t0 = example_now();
  kiln_model *m;
  example_check(kiln_model_create(a.seed, &m, &err), "model", &err);
  example_check(kiln_model_add_input(m, 10000, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 16, KILN_ACTIVATION_RELU, &err), "model", &err);
  example_check(kiln_model_add_dense(m, 1, KILN_ACTIVATION_SIGMOID, &err), "model", &err);
  kiln_optimizer opt;
  kiln_optimizer_init(&opt, KILN_OPTIMIZER_ADAM);
  const char *metrics[] = {"accuracy"};
  example_check(kiln_model_compile(m, &opt, KILN_LOSS_BINARY_CROSSENTROPY, metrics, 1, &err),
                "compile", &err);
  kiln_fit_options fo;
  example_fit_options(&a, 4, 512, &fo);
  example_check(kiln_model_fit(m, &train.x, &train.y, &fo, NULL, &err), "fit", &err);
  double train_seconds = example_now() - t0;
  kiln_logs logs;
  example_check(kiln_model_evaluate(m, &test.x, &test.y, 512, &logs, &err), "evaluate", &err);
  printf("{\"example\": \"imdb\", \"seed\": %llu, \"epochs\": %d, \"test_loss\": %.4f, "
         "\"test_accuracy\": %.4f, \"train_seconds\": %.2f}\n",
         (unsigned long long)a.seed, fo.epochs, kiln_logs_get(&logs, "loss"),
         kiln_logs_get(&logs, "accuracy"), train_seconds);
  kiln_model_free(m);
  kiln_dataset_free(&train);
  kiln_dataset_free(&test);
  return 0;
}
