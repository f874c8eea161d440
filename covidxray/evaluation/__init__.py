"""evaluation: how good a model is and why. Scores (scoring), the headline and how numbers are
written (headline), left-out places (places, holdout), shortcut controls (controls), the
not-an-X-ray check and its probe sets (ood, non_xray), Grad-CAM (gradcam) and the HTML report
(report). Imports config, data and model."""
