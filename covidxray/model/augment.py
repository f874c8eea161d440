"""Augmentation: the tutorial's ImageDataGenerator settings (params.yaml `augment`) as Keras
preprocessing layers, and the layer that keeps them on inside a compiled forward pass."""

import math

import keras


def augmenter(aug):
    """The tutorial's ImageDataGenerator augmentation as Keras preprocessing layers.

    Active only in training. Factors of 0 leave a layer out. Channel shift adds one random
    offset to all channels, which is what RandomBrightness does on the 0-255 range.
    """
    layers, fill = keras.layers, {"fill_mode": aug.fill_mode}
    steps = []
    if aug.rotation_degrees:
        steps.append(layers.RandomRotation(aug.rotation_degrees / 360, **fill))
    if aug.shift:
        steps.append(layers.RandomTranslation(aug.shift, aug.shift, **fill))
    if aug.shear_degrees:
        shear = math.tan(math.radians(aug.shear_degrees))
        steps.append(layers.RandomShear(x_factor=shear, y_factor=0.0, **fill))
    if aug.zoom:
        zoom = (-aug.zoom, aug.zoom)
        steps.append(layers.RandomZoom(zoom, zoom, **fill))
    if aug.channel_shift:
        steps.append(layers.RandomBrightness(aug.channel_shift / 255, value_range=(0, 255)))
    flips = [name for name, on in (("horizontal", aug.horizontal_flip),
                                   ("vertical", aug.vertical_flip)) if on]
    if flips:
        steps.append(layers.RandomFlip("_and_".join(flips)))
    return keras.Sequential(steps, name="augment")


class Augmenting(keras.layers.Layer):
    """The augmentation layers, always on, so that they compile into the forward pass (predict
    calls layers in inference mode, where augmentation does nothing)."""

    def __init__(self, augment, **kwargs):
        super().__init__(**kwargs)
        self.augment = augment

    def call(self, images):
        return self.augment(images, training=True)
