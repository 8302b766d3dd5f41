"""Metrics of `ser`: saliency quality (KLD, CC, SIM, NSS, AUC; MIT / Tübingen conventions) and continual learning
(accuracy matrix -> average, anytime accuracy, forgetting, backward transfer), as in SER (Bellitto et al., NeurIPS
2024, method.md section 5)."""
