"""COVID-19 pneumonia on chest X-rays: the library under the pipeline's stages, in wings by
concern, each importing only from the wings before it:

    config <- data <- model <- evaluation <- app   (and stages/, dvc.yaml's stages)

config reads params.yaml; data reads the sources and writes the manifest, split, shards and
external sets; model is VGG16, the features bank, the head and its training; evaluation scores
models and explains them; app is what a person runs: `covidxray predict`, `demo`, `verify`.
At the top, what every wing uses: paths, files, errors, native_log (TensorFlow's native log
lines left out, for the entry points), and the runner that turns a main() into
a command. docs/development.md#the-house draws it and says where new code goes."""
