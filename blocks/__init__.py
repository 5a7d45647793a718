"""hybridgrid.blocks"""
