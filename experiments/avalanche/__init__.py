"""The Avalanche cross-check of `experiments.avalanche_compare`, in three parts: what ser's runs saw
(`ser_side`), Avalanche's strategies trained on it (`strategies`) and the table of both (`table`)."""
