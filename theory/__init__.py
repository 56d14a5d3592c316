"""Theory results as executable experiments (see DESIGN.md, "Theory experiments")."""
