"""FedAvg (McMahan et al., 2017): local SGD, server averages the model changes."""

from .base import FOConfig, VectorMethod


class FedAvg(VectorMethod):
    name = "fedavg"
    Config = FOConfig
